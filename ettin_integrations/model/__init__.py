"""The model: load it once (refusing wrong heads), place it (device, dtype, attention), compile it if asked.

``loading.py`` (shared loaded models, the only loading path), ``placement.py`` (attention and batch
budget per device), ``compilation.py`` (opt-in ``torch.compile``), ``head_precision.py`` (the scoring
head in float32 under half precision), ``inputs.py`` (padded inputs), ``dependencies.py`` (version
guards).
"""
