"""Query normalization: the one key under which the same query, typed differently, is grouped.

The training signal (``clickstream.signal.pbm``) and the per-query analytics group sessions by
:func:`normalize_query` of their ``search_query``. The stored query text is never changed; the key is
computed when reading.
"""

from __future__ import annotations

import unicodedata

__all__ = ["normalize_query"]


def normalize_query(text: str) -> str:
    """The grouping key of a query text.

    Steps, in order:

    1. Unicode NFKC: compatibility forms become their plain letters (fullwidth ``ＢＥＲＴ`` -> ``BERT``, the
       ligature ``ﬁ`` -> ``fi``, a no-break space -> a space), composed accents stay composed (``é``);
    2. ``str.casefold`` (not ``lower``): caseless matching as Unicode defines it, so ``Straße`` and
       ``STRASSE`` share a key, as do the Greek final and medial sigma; then NFKC once more, because case
       folding can leave a string that is not in NFKC (the result is then stable: normalizing a key gives
       the same key);
    3. whitespace: every run of Unicode whitespace (what ``str.isspace`` calls whitespace: spaces, tabs,
       newlines, no-break and ideographic spaces, ...) becomes one ASCII space, and the ends are trimmed.

    Nothing else changes: punctuation, digits, accents and zero-width characters are kept. A query of only
    whitespace gives ``""`` (the caller decides what an empty key means; the training signal skips it).

    :raises TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"query text: expected str, got {type(text).__name__}")
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())
