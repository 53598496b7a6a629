"""The benchmark harness (``ettin-rerank bench``): every variant on one workload, as ratios against the anchor."""
