"""normalize_query: one key for the same query typed differently; the stored text is not touched."""

from __future__ import annotations

import pytest

from clickstream.signal import normalize_query


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("BERT Classification", "bert classification"),
        ("  bert   classification  ", "bert classification"),
        ("\tbert\u00a0classification\n", "bert classification"),  # tab, no-break space, newline
        ("bert\u3000classification", "bert classification"),  # ideographic space
        ("ＢＥＲＴ　ｃｌａｓｓｉｆｉｃａｔｉｏｎ", "bert classification"),  # fullwidth letters and space
        ("\ufb01ne-tuned", "fine-tuned"),  # the fi ligature
        ("Straße", "strasse"),  # casefold, not lower
        ("STRASSE", "strasse"),
        ("ΌΣΟΣ", "όσοσ"),  # final and medial sigma share a key
        ("café", "café"),  # accents stay (NFKC composes them)
        ("cafe\u0301", "café"),  # decomposed accent: composed
        ("t5 (small)", "t5 (small)"),  # punctuation and digits kept
        ("   ", ""),
        ("", ""),
    ],
)
def test_keys(text: str, key: str) -> None:
    assert normalize_query(text) == key


@pytest.mark.parametrize("text", ["ＢＥＲＴ  Large", "Straße", "\u1e9e", "ﬃ", "ΌΣΟΣ", "x\u2003\u2029y", "İstanbul"])
def test_a_key_is_its_own_key(text: str) -> None:
    key = normalize_query(text)
    assert normalize_query(key) == key


def test_the_input_is_not_changed_and_must_be_text() -> None:
    text = "  BERT  "
    normalize_query(text)
    assert text == "  BERT  "
    with pytest.raises(TypeError, match="query text"):
        normalize_query(None)  # type: ignore[arg-type]
