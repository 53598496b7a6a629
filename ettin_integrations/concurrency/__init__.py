"""Sharing one model between callers, threads and processes.

``shared.py`` (one instance per key: engines and loaded models), ``microbatch.py`` (cross-request
micro-batching), ``forking.py`` (what a forked worker process resets).
"""
