"""Find a Hub model before loading it: in the cache, on a Hub that answers, or a clear error in seconds.

Without this, a machine without network waits out the Hub client's retries (about a minute of
"Retrying in Ns") before failing, and a bare typo such as ``ettin-reranker-17`` is silently
turned into ``cross-encoder/ettin-reranker-17`` and waited on the same way. Every error here is
one line that says what to pass instead.
"""

from __future__ import annotations

import difflib
import os

from ..catalog import ETTIN_SIZES, hub_id
from ..config import hub_offline, is_local_path
from ..errors import OFFLINE_HINT, ModelLoadError, ModelNotFoundError

__all__ = ["prepare_hub_model"]

#: Seconds the Hub may take to answer one request before it counts as unreachable.
PROBE_SECONDS = 3.0


def prepare_hub_model(model: str, revision: str | None, local_files_only: bool) -> bool:
    """Check that ``model`` can be loaded without waiting on the network; returns the ``local_files_only``
    to load with (True when the model is cached and the Hub does not answer).

    Raises:
        ModelNotFoundError: a name that is neither a directory nor a Hub id, or not cached while offline.
        ModelLoadError: not cached and the Hub does not answer (``hub_unreachable``).
    """
    if is_local_path(model):
        return local_files_only
    if "/" not in model:
        close = difflib.get_close_matches(model, [*ETTIN_SIZES, *(hub_id(s) for s in ETTIN_SIZES)], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; Ettin sizes are {', '.join(ETTIN_SIZES)}."
        raise ModelNotFoundError(
            model, f"{model!r} is neither a local directory nor a Hub id (owner/name): not found locally{hint}"
        )
    cached = _cached(model, revision)
    offline = local_files_only or hub_offline()
    if offline:
        if not cached:
            raise ModelNotFoundError(
                model,
                f"{model!r} is not in the local Hugging Face cache and the network is off (offline): "
                f"not found locally. {OFFLINE_HINT}.",
            )
        return local_files_only
    if _hub_answers():
        return local_files_only
    if cached:
        return True  # load what the cache has instead of waiting on retries for an update check
    from huggingface_hub import constants

    raise ModelLoadError(
        model,
        f"cannot reach the Hugging Face Hub ({constants.ENDPOINT}) and it is not in the local cache",
        hub_unreachable=True,
    )


def _cached(model: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # a malformed repo id or cache: not usable from the cache
        return False
    return isinstance(found, str) and os.path.isfile(found)


def _hub_answers() -> bool:
    """One short request to the Hub's endpoint, through the Hub client's own session (proxies included)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=PROBE_SECONDS)
    except Exception:
        return False
    return True
