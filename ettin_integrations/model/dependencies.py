"""Refuse dependency versions that would silently give wrong scores.

sentence-transformers < 5.5 (and ``AutoModelForSequenceClassification``) load Ettin's modular
head as a freshly initialised classifier *without any error*: every score would be noise. A loud
failure with the fix is the only safe behaviour.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version

MIN_VERSIONS: dict[str, str] = {"sentence-transformers": "5.5", "transformers": "5.0"}


def check_dependencies() -> None:
    """Raise ``ImportError`` naming the upgrade command if a dependency is too old or missing."""
    for package, minimum in MIN_VERSIONS.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            raise ImportError(
                f"ettin-integrations needs {package}>={minimum}, which is not installed. "
                f"Run: pip install -U '{package}>={minimum}'"
            ) from None
        if Version(installed) < Version(minimum):
            raise ImportError(
                f"ettin-integrations needs {package}>={minimum}, found {installed}. Older releases load "
                f"Ettin rerankers with a randomly initialised scoring head and no error, so every score "
                f"would be meaningless. Run: pip install -U '{package}>={minimum}'"
            )
