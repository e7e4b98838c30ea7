"""Bounded counters: top-k (Space-Saving), capped distinct sets and a self-coarsening timeline.

Counts that grow with the input (clients, destinations, minutes) go through these so memory
stays constant however large the logs are; when a bound is hit the result says so
(`approximate`), it never silently drops counts.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from itertools import groupby, repeat
from typing import Any, Generic, TypeVar

V = TypeVar("V")

try:  # the C fast path's module also has the top-k table's hot loop (built where gcc is)
    from relayguard._fastscan import topk_add_many as _topk_add_many
except ImportError:
    _topk_add_many = None


class TopK:
    """Space-Saving heavy hitters: exact while fewer than `k` keys, error-bounded after.

    A new key in a full table replaces the victim: the first key (in the table's order) whose
    count is at most the floor, the floor being raised to the smallest count when no key is
    left there. Counts only grow and a key that replaces a victim starts above the floor, so
    the keys at the floor are listed (`low`, last in table order first) when it is raised
    and taken from its end, never found by a walk over the table: with distinct clients and
    destinations (a spam run) that walk, over a dict full of deleted slots, was most of an
    event's cost."""

    __slots__ = ("approximate", "counts", "floor", "k", "low")

    def __init__(self, k: int = 64) -> None:
        self.k = k
        self.counts: dict[str, int] = {}
        self.approximate = False
        self.floor = 0  # no count is below it (counts only grow once the map is full)
        self.low: list[str] = []  # keys at the floor when it was raised, the next victim last

    def add(self, key: str, n: int = 1) -> None:
        self.add_counts(((key, n),))

    def add_many(self, keys: list[str]) -> None:
        """`add(key)` for each key, in order: in C where built (`_fastscan.topk_add_many`,
        ~10x faster: each proxy event adds a client and a destination, in a spam run nearly
        always new ones that evict)."""
        if _topk_add_many is not None:
            _topk_add_many(self, keys)
        else:
            self.add_counts(zip(keys, repeat(1)))

    def add_counts(self, items: Iterable[tuple[str, int]]) -> None:
        """`add(key, n)` for each pair, in order, in one loop."""
        counts = self.counts
        k = self.k
        for key, n in items:
            c = counts.get(key)
            if c is not None:
                counts[key] = c + n
            elif len(counts) < k:
                counts[key] = n
            else:
                counts[key] = c = counts.pop(self._victim()) + n
                if c <= self.floor:  # (n < 1: not from this module) the list no longer
                    self.low.clear()  # holds every key at the floor: it is rebuilt
                self.approximate = True

    def _victim(self) -> str:
        """The key a new one replaces (see the class docstring); the table is full."""
        counts = self.counts
        try:
            low, floor = self.low, self.floor
        except AttributeError:  # state pickled before the list (or the floor) existed
            low, floor = [], 0
        while low:
            key = low.pop()
            c = counts.get(key)
            if c is not None and c <= floor:
                self.low = low
                return key
        self.floor = floor = min(counts.values())
        self.low = low = [k for k, c in counts.items() if c == floor][::-1]
        return low.pop()

    def merge(self, other: TopK) -> None:
        for key, n in other.counts.items():
            self.add(key, n)
        self.approximate |= other.approximate

    def top(self, n: int = 10) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def __len__(self) -> int:
        return len(self.counts)


class Distinct:
    """Distinct keys up to `cap`; beyond it only the fact that there are more is kept."""

    __slots__ = ("cap", "keys", "overflow")

    def __init__(self, cap: int = 10000) -> None:
        self.cap = cap
        self.keys: set[str] = set()
        self.overflow = False

    def add(self, key: str) -> None:
        if key in self.keys:
            return
        if len(self.keys) < self.cap:
            self.keys.add(key)
        else:
            self.overflow = True

    def add_many(self, keys: list[str]) -> None:
        """`add(key)` for each key, in order, with set operations: the first new keys that
        fit are kept, and any further new key marks the overflow."""
        have = self.keys
        room = max(0, self.cap - len(have))
        if len(keys) <= room:
            have.update(keys)
            return
        new = [key for key in dict.fromkeys(keys) if key not in have]
        have.update(new[:room])
        if len(new) > room:
            self.overflow = True

    def count(self) -> int:
        return len(self.keys)

    def describe(self) -> str:
        return f">{self.cap}" if self.overflow else str(len(self.keys))


class Timeline:
    """Events per time bucket (60 s at first); when more than `cap` buckets exist the bucket
    width doubles and buckets are merged, so a year of logs still fits in `cap` entries."""

    __slots__ = ("buckets", "cap", "derived", "width")

    def __init__(self, cap: int = 4096, width: int = 60) -> None:
        self.cap = cap
        self.width = width
        self.buckets: dict[int, int] = {}
        # a result computed from the buckets (detect.spike_buckets: asked for by the stats and
        # by the incidents of one report), dropped whenever they change
        self.derived: tuple[Any, Any] | None = None

    def add(self, t: float, n: int = 1) -> None:
        self._add(t, n, 1)

    def add_many(self, times: Iterable[float]) -> None:
        """`add(t)` for each time, in order: all at once when no doubling can happen on the
        way (the buckets and the new ones fit the cap), else a run of times in one bucket at
        once, with the run's checks of the cap (a doubling need not bring the buckets under
        it: each `add` doubles again). A coarsening on the way re-buckets the rest: the
        bucket of a bucket's start is the bucket of its times at any width that is a
        multiple of the old one."""
        width = self.width
        keys = [int(t) // width * width for t in times]
        counts = Counter(keys)  # (in the order of first appearance, as the runs come)
        b = self.buckets
        if len(b) + len(counts) <= self.cap:  # no doubling on the way: counted at once
            self.derived = None
            for key, n in counts.items():
                b[key] = b.get(key, 0) + n
            return
        for key, run in groupby(keys):
            n = sum(1 for _ in run)
            self._add(key, n, n)

    def _add(self, t: float, n: int, checks: int) -> None:
        """n events at `t`, then `checks` times: coarsen while over the cap."""
        self.derived = None
        key = int(t) // self.width * self.width
        b = self.buckets
        b[key] = b.get(key, 0) + n
        for _ in range(checks):
            if len(self.buckets) <= self.cap:
                break
            self._coarsen()

    def add_minutes(self, counts: dict[int, int]) -> None:
        """Merge per-minute counts (epoch of the minute start -> events)."""
        for key, n in counts.items():
            self.add(key, n)

    def _coarsen(self) -> None:
        self.width *= 2
        merged: dict[int, int] = {}
        for key, n in self.buckets.items():
            k = key // self.width * self.width
            merged[k] = merged.get(k, 0) + n
        self.buckets = merged

    def series(self) -> list[tuple[int, int]]:
        """(bucket start, count) in time order, empty buckets left out."""
        return sorted(self.buckets.items())

    def peak_per_minute(self) -> float:
        if not self.buckets:
            return 0.0
        return max(self.buckets.values()) * 60.0 / self.width

    def to_dict(self) -> dict[str, Any]:
        return {"bucket_seconds": self.width,
                "points": [[iso(t), n] for t, n in self.series()]}


_ISO_DAYS: dict[int, str] = {}


def iso(t: float | None) -> str | None:
    """Epoch seconds as `YYYY-MM-DDTHH:MM:SSZ` (None stays None), as strftime writes it; the
    date is formatted once per day (a timeline has thousands of points and a few days)."""
    if t is None:
        return None
    day, sec = divmod(math.floor(t), 86400)
    date = _ISO_DAYS.get(day)
    if date is None:
        if len(_ISO_DAYS) > 4096:
            _ISO_DAYS.clear()
        date = _ISO_DAYS[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    return f"{date}{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}Z"


class LruMap(Generic[V]):
    """Per-key state for at most `cap` keys (clients, senders). When a new key arrives and the
    map is full, the least recently touched key that `expendable` allows is dropped (the
    oldest of all if none is), and `evicted` counts it: a long-running watcher keeps seeing new
    keys instead of silently ignoring them once full."""

    __slots__ = ("cap", "evicted", "items")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: OrderedDict[str, V] = OrderedDict()
        self.evicted = 0

    def get(self, key: str) -> V | None:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: str, value: V, expendable: Callable[[V], bool] | None = None) -> None:
        if key not in self.items and len(self.items) >= self.cap:
            victim = next((k for k, v in self.items.items()
                           if expendable is None or expendable(v)), next(iter(self.items)))
            del self.items[victim]
            self.evicted += 1
        self.items[key] = value
        self.items.move_to_end(key)

    def __len__(self) -> int:
        return len(self.items)
