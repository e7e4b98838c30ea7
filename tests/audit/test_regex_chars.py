"""Which capture groups can carry a `:port` into a proxy target (Apache `%N`/`$N`)."""

from __future__ import annotations

import pytest

from relayguard.audit.regex_chars import regex_group_may_hold


@pytest.mark.parametrize(("pattern", "group", "holds"), [
    (r"^([a-z.]+)\.gw\.example$", 1, False),
    (r"^(?:www\.)?([a-z0-9-]+)\.example$", 1, False),
    (r"^([^:/]+)$", 1, False),
    (r"^(\w+)$", 1, False),
    (r"^([\d.]+)$", 1, False),
    (r"^(x)$", 2, False),  # no such group: empty
    (r"^(.+)\.gw\.example$", 1, True),
    (r"^([^/]+)$", 1, True),
    (r"^([\D]+)$", 1, True),
    (r"^(a|b:)$", 1, True),
    (r"^(x)(.*)$", 2, True),
    (r"^(?<h>[a-z]+)$", 1, True),  # PCRE-only syntax: assume the worst
])
def test_colon_in_group(pattern: str, group: int, holds: bool) -> None:
    assert regex_group_may_hold(pattern, group, ":") is holds
