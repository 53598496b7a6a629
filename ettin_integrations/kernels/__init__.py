"""Attention kernels registered with transformers (unpadded, variable-length attention)."""
