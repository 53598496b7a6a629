"""Reproducible speed and accuracy comparisons of ettin-integrations against the anchors."""
