"""Query normalization: one function, shared by the labels step and the per-query analytics."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalize_query(text: str) -> str:
    """The key a query is grouped under: Unicode NFKC, lower case, trimmed, inner whitespace collapsed.

    The stored query text never changes; only aggregates use this key.
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()
