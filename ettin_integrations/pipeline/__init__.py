"""The scoring pipeline, one stage a module; ``scoring.py`` runs them in order (read it first).

``validation.py`` -> ``tokenization.py`` (+ ``token_cache.py``) -> ``windows.py`` -> ``batching.py``
-> ``forward.py`` -> aggregate (``windows.py``) -> normalize (``..normalization``) -> rank
(``..results``); ``waves.py`` overlaps tokenizing with the model, ``timings.py`` times the stages.
"""
