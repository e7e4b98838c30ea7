"""A config as a tree of directives and sections, every node carrying its file and line.

Parsers of line-oriented servers produce this shape; the per-server policy code then works
out what the server would allow. Keeping syntax (this tree) apart from semantics (policy)
lets each be tested alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class Node:
    """A directive (`ProxyRequests On`) or a section (`<Proxy "*">` … `</Proxy>`)."""

    name: str
    args: tuple[str, ...]
    path: str
    line: int
    children: list[Node] = field(default_factory=list)
    is_section: bool = False
    raw: str = ""  # the logical line as written (after continuation joining)
    end_line: int | None = None  # line of the closing tag, for sections
    included_from: tuple[tuple[str, int], ...] = ()  # (file, line) of each Include on the way

    @property
    def key(self) -> str:
        """Directive names are case-insensitive: compare on this."""
        return self.name.lower()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def walk(self) -> Iterator[Node]:
        """This node and every descendant, in file order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def render(self) -> str:
        """The line as a person would recognise it in their file."""
        if self.raw:
            return self.raw.strip()
        args = " ".join(_quote(a) for a in self.args)
        return f"<{self.name} {args}>" if self.is_section else f"{self.name} {args}".rstrip()


def _quote(arg: str) -> str:
    return f'"{arg}"' if (not arg or any(c.isspace() for c in arg)) else arg


def excerpt(nodes: list[Node]) -> str:
    """Evidence text: each node as `file:line: text`, in the order given."""
    return "\n".join(f"{n.where}: {n.render()}" for n in nodes)
