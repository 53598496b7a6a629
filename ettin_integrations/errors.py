"""One error vocabulary for the whole package.

Every error we raise on purpose is an :class:`EttinError`, and also the built-in a caller would
expect, so ``except ValueError`` / ``except TypeError`` / ``except OSError`` clauses written before
this hierarchy keep working:

- bad input: :class:`InvalidInputError` (a ``ValueError``: the value is wrong) and
  :class:`InputTypeError` (a ``TypeError``: the kind of value is wrong; unknown option names too);
- a model that cannot be loaded: :class:`ModelLoadError` (an ``OSError``, as transformers raises);
- a remote service that failed: :class:`ServiceError` (a ``RuntimeError``) and its kinds.

The rule that decides between the first two: a value of the wrong type (a number where a string
belongs, a dict where a list belongs) is an ``InputTypeError``; a value of the right type that is
out of range or malformed (a negative ``top_n``, a lone surrogate) is an ``InvalidInputError``.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "EttinError",
    "InputTypeError",
    "InvalidInputError",
    "InvalidModelError",
    "InvalidResponseError",
    "ModelLoadError",
    "ModelNotFoundError",
    "RequestRefusedError",
    "ServiceError",
    "ServiceUnreachableError",
]


class EttinError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidInputError(EttinError, ValueError):
    """An argument or option has the right type but a value we cannot use; the message names it."""


class InputTypeError(EttinError, TypeError):
    """An argument or option has the wrong type (or the option does not exist); the message names it."""


#: What to do without Hub access, said the same way by every error that needs it (the CLI says --model DIR).
OFFLINE_HINT = (
    "Pass a local directory (model='DIR'); without Hub access, `python -m ettin_integrations.testing DIR --size 17m` "
    "writes an Ettin-shaped test checkpoint (random weights) to pass"
)


class ModelLoadError(EttinError, OSError):
    """A model could not be loaded. ``hub_unreachable`` is True when the Hub was the obstacle.

    The message speaks to Python callers; the CLI rephrases it in terms of its flags.
    """

    def __init__(self, model: str, reason: str, hub_unreachable: bool = False) -> None:
        self.model, self.reason, self.hub_unreachable = model, reason, hub_unreachable
        message = f"Could not load {model!r}: {reason.rstrip('.')}."
        if hub_unreachable:
            message += f" {OFFLINE_HINT}."
        super().__init__(message)


class InvalidModelError(ModelLoadError, ValueError):
    """A model was found, but it is not a usable cross-encoder (no scoring head, damaged files, wrong outputs)."""

    def __init__(self, model: str, message: str) -> None:
        self.model, self.reason, self.hub_unreachable = model, message, False
        OSError.__init__(self, message)


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """A local model path that does not exist."""

    def __init__(self, model: str, message: str) -> None:
        self.model, self.reason, self.hub_unreachable = model, message, False
        OSError.__init__(self, message)


class ServiceError(EttinError, RuntimeError):
    """A rerank service failed in a way retrying did not fix; ``url`` and ``status`` (if any) attached."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        where = f"rerank service {url}" if url else "rerank service"
        super().__init__(f"{where}: {message}")
        self.url, self.status = url, status


class ServiceUnreachableError(ServiceError, ConnectionError):
    """No answer from the service (connection refused, reset, timed out) after every retry."""


class InvalidResponseError(ServiceError):
    """The service answered, but not in the declared shape (wrong JSON, missing or repeated indices, NaN)."""


class AuthenticationError(ServiceError, PermissionError):
    """The service refused the API key (401)."""


class RequestRefusedError(ServiceError, ValueError):
    """The service refused the request as too large or invalid (413 / 422): the input must change."""
