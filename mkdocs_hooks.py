"""MkDocs hook: the docstrings' Sphinx-style cross-reference roles, read as plain code on the site.

The docstrings are written for both ``help()`` and the site. ``:class:`X``` and ``Example::`` read
well in a terminal; on a Markdown page the role prefix and the second colon are noise, so they are
dropped from the rendered HTML (``~pkg.mod.Name`` shows as ``Name``, as Sphinx would).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):(<code>)")
_TILDE = re.compile(r"<code>~(?:[\w]+\.)+(\w+)</code>")
_LITERAL = re.compile(r"(\w)::</p>")


def on_page_content(html: str, **kwargs: Any) -> str:
    html = _ROLE.sub(r"\1", html)
    html = _TILDE.sub(r"<code>\1</code>", html)
    return _LITERAL.sub(r"\1:</p>", html)
