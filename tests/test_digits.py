"""relayguard.digits: numbers in outside text, never a ValueError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relayguard.digits import ascii_int, is_digits


def test_only_ascii_digits_count() -> None:
    assert ascii_int("0025") == 25 and is_digits("65535")
    for text in ("", "²", "2²", "③", "\u0663", "-1", " 1", "1 ", "+1", "1.0"):
        assert ascii_int(text) is None and not is_digits(text), text
    assert ascii_int(None) is None


@given(st.text(max_size=12))
def test_never_raises_and_agrees_with_int(text: str) -> None:
    got = ascii_int(text)
    if got is None:
        assert not (text and all("0" <= c <= "9" for c in text))
    else:
        assert got == int(text) and all("0" <= c <= "9" for c in text)
