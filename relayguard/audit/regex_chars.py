"""Which characters a capture group of a config regex can hold.

A proxy target built from a capture lets the client pick the port only if the capture can
contain a `:`: `^([a-z.]+)\\.gw\\.example$` cannot, `^(.+)$` can. Apache and nginx use PCRE;
Python's parser reads the common subset the same way, and anything it cannot read (or an
unknown construct) counts as "may hold it", the safe answer.
"""

from __future__ import annotations

import re
from typing import Any

try:  # Python 3.11+: the parser behind `re`, whose parse tree we walk
    import re._constants as _c
    import re._parser as _parser
except ImportError:  # pragma: no cover - another Python: always answer "may hold it"
    _parser = None  # type: ignore[assignment]

_MAY_NOT = {"CATEGORY_DIGIT", "CATEGORY_SPACE", "CATEGORY_WORD", "CATEGORY_LINEBREAK",
            "CATEGORY_UNI_DIGIT", "CATEGORY_UNI_SPACE", "CATEGORY_UNI_WORD",
            "CATEGORY_UNI_LINEBREAK", "CATEGORY_LOC_WORD"}  # classes without punctuation


def regex_group_may_hold(pattern: str, group: int, char: str) -> bool:
    """Can capture `group` of `pattern` contain `char`? False when the group does not exist."""
    if _parser is None:
        return True
    try:
        tree = _parser.parse(pattern)
    except (re.error, ValueError, RecursionError):  # PCRE syntax Python lacks: conservative
        return True
    found = _find_group(list(tree), group)
    if found is None:
        return False
    return _may_hold(found, ord(char))


def _find_group(items: list[Any], group: int) -> list[Any] | None:
    for op, av in items:
        for sub in _children(op, av):
            if op is _c.SUBPATTERN and av[0] == group:
                return list(av[3])
            hit = _find_group(sub, group)
            if hit is not None:
                return hit
    return None


def _children(op: Any, av: Any) -> list[list[Any]]:
    if op is _c.SUBPATTERN:
        return [list(av[3])]
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", None)):
        return [list(av[2])]
    if op is _c.BRANCH:
        return [list(b) for b in av[1]]
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [list(av[1])]
    if op is getattr(_c, "ATOMIC_GROUP", None):
        return [list(av)]
    if op is _c.GROUPREF_EXISTS:
        return [list(b) for b in av[1:] if b is not None]
    return []


def _may_hold(items: list[Any], code: int) -> bool:
    for op, av in items:
        if op is _c.LITERAL:
            if av == code:
                return True
        elif op is _c.NOT_LITERAL or op is _c.ANY:
            if op is _c.ANY or av != code:
                return True
        elif op is _c.IN:
            if _in_set(av, code):
                return True
        elif op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue  # anchors and lookarounds consume nothing
        elif op in (_c.SUBPATTERN, _c.MAX_REPEAT, _c.MIN_REPEAT, _c.BRANCH,
                    getattr(_c, "POSSESSIVE_REPEAT", None), getattr(_c, "ATOMIC_GROUP", None),
                    _c.GROUPREF_EXISTS):
            if any(_may_hold(sub, code) for sub in _children(op, av)):
                return True
        else:  # back-references and anything unknown: may hold it
            return True
    return False


def _in_set(members: list[Any], code: int) -> bool:
    negate = False
    hit = False
    for op, av in members:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            hit |= av == code
        elif op is _c.RANGE:
            hit |= av[0] <= code <= av[1]
        elif op is _c.CATEGORY:
            hit |= str(av) not in _MAY_NOT
        else:
            return True  # unknown member: may hold it
    return hit != negate
