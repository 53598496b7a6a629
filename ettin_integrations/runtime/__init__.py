"""What drives the model: loading, placement, tokenization, batching, windows, normalization."""
