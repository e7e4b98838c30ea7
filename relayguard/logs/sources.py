"""Where log bytes come from: plain, gzip, bzip2, xz files, rotated sets in time order, stdin.

Compression is recognised by magic bytes, not by name. Reading is streaming with a bounded
line length (an over-long line is cut, counted, and the rest of it skipped), so memory stays
constant whatever the input; a truncated compressed file yields what it holds and reports the
truncation instead of failing.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

MAX_LINE = 64 * 1024  # longer lines are cut here (the rest is skipped, never buffered)
CHUNK = 4 * 1024 * 1024

# a rotation number (.1, .2.gz) or a date: logrotate's dateext `-20241201` (`-2024120112`
# hourly) or a `dateformat` with dashes, `-2024-12-01` / `.2024-12-01`
_ROTATED = re.compile(
    r"^(?P<base>.+?)(?:[.-](?P<num>\d{4}-\d\d-\d\d(?:-\d\d)?|\d{8}(?:\d{2})?|\d{1,4}))?"
    r"(?P<comp>\.gz|\.bz2|\.xz)?$")


@dataclass
class ReadProblems:
    """Non-fatal trouble met while reading one source (reported as errors by the caller)."""

    truncated: str | None = None  # message when a compressed stream ended early / is corrupt
    overlong: int = 0
    overlong_samples: list[tuple[int | None, bytes]] = field(default_factory=list)


def compression_of(head: bytes) -> str | None:
    """'gz', 'bz2', 'xz' by magic number, or None for plain data."""
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def open_binary(path: str, problems: ReadProblems | None = None) -> SafeReader:
    """Open a path (or `-` for stdin) for streaming, decompressing as its magic says.

    Raises OSError for files that cannot be opened; the caller turns it into an error entry.
    """
    stream, compressed = _open_raw(path)
    return SafeReader(stream, problems or ReadProblems(), compressed)


class _Prefixed:
    """A stream whose first bytes were already read: sniffing a pipe, a FIFO or
    `<(zcat x.gz)` must not seek, they cannot."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(n)
        if n < 0:
            out, self.head = self.head + self.raw.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        if len(out) < n:
            out += self.raw.read(n - len(out))
        return out

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()


def _read_head(raw: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes, however few a pipe hands over per read (fewer only at its end)."""
    head = b""
    for _ in range(n):
        piece = raw.read(n - len(head))
        if not piece:
            break
        head += piece
        if len(head) >= n:
            break
    return head


def _open_raw(path: str) -> tuple[BinaryIO, bool]:
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
    else:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
    head = _read_head(raw, 6)
    stream: BinaryIO = _Prefixed(head, raw)  # type: ignore[assignment]
    kind = compression_of(head)
    if kind == "gz":
        return gzip.GzipFile(fileobj=stream, mode="rb"), True  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.BZ2File(stream, "rb"), True  # type: ignore[return-value]
    if kind == "xz":
        # .xz, not "auto": zero bytes after a stream are the format's Stream Padding (auto
        # reads them as the start of a .lzma stream and calls the file truncated)
        xz = lzma.LZMAFile(stream, "rb", format=lzma.FORMAT_XZ)  # noqa: SIM115 - the caller's
        return xz, True  # type: ignore[return-value]
    return stream, False


def is_plain_file(path: str) -> bool:
    """A regular, uncompressed file: the only kind the parallel fast path may split by offset."""
    if path == "-" or not os.path.isfile(path):  # never open a FIFO twice: it would eat data
        return False
    try:
        with open(path, "rb") as fh:
            return compression_of(fh.read(6)) is None
    except OSError:
        return False


_DECODE_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)
PIECE = 64 * 1024


class SafeReader:
    """Reads a (decompressing) stream in pieces of at most 64 KiB; a truncated or corrupt
    stream ends the data instead of raising, and is recorded in `problems`. Each piece is one
    decoding step (`read1`), so the error comes on a step of its own and nothing decoded
    before it is lost. Errors of the underlying file itself (EIO) are re-raised."""

    def __init__(self, stream: BinaryIO, problems: ReadProblems, compressed: bool) -> None:
        self.stream = stream
        self.problems = problems
        self.compressed = compressed
        self.done = False

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        if not self.compressed:
            return self.stream.read(n)
        out: list[bytes] = []
        want = n if n > 0 else 1 << 62
        got = 0
        while got < want:
            try:
                # read() gathers several steps and drops them all when one fails
                piece = self.stream.read1(min(PIECE, want - got))  # type: ignore[attr-defined]
            except _DECODE_ERRORS as exc:
                if type(exc) is OSError and "gzip" not in str(exc).lower() and \
                        "compressed" not in str(exc).lower() and exc.errno is not None:
                    raise
                self.problems.truncated = _truncation_message(exc)
                self.done = True
                break
            if not piece:
                break
            out.append(piece)
            got += len(piece)
        return b"".join(out)

    def close(self) -> None:
        self.stream.close()


def iter_chunks(stream: SafeReader | BinaryIO, problems: ReadProblems,
                size: int = CHUNK) -> Iterator[bytes]:
    """Blocks of whole lines (each ends with b'\\n' except perhaps the very last).

    A line longer than 4 x MAX_LINE is cut to MAX_LINE + 1 bytes and the rest of it is
    skipped as it streams by, so no line is ever held whole in memory. Counting over-long lines
    is left to whoever splits the chunks into lines (`iter_lines`, the fast path's
    `scan_chunk`): the cut line is still one byte too long for them, so every over-long line
    is counted once, with its line number, whatever path reads it.
    """
    rest = b""
    skipping = False
    while True:
        block = stream.read(size)
        if not block:
            if rest:
                yield rest
            return
        if skipping:
            nl = block.find(b"\n")
            if nl < 0:
                continue
            block = block[nl:]
            skipping = False
        block = rest + block
        cut = block.rfind(b"\n")
        if cut < 0:
            if len(block) > MAX_LINE * 4:
                rest = block[:MAX_LINE + 1]
                skipping = True
            else:
                rest = block
            continue
        yield block[: cut + 1]
        rest = block[cut + 1:]


def line_text(raw: bytes) -> str:
    """A line as text: undecodable bytes kept as escapes, and the CR of a CRLF line ending
    dropped (it is no part of the line: Postfix's `status=sent (…)` would not end the line,
    and a sample printed with it returns the terminal over the client's address)."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", "surrogateescape")


def _truncation_message(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "compressed stream ends before its end marker (truncated file); " \
               "analysed what it holds"
    return f"compressed stream is corrupt ({exc}); analysed what came before"


def iter_lines(stream: SafeReader | BinaryIO, problems: ReadProblems,
               size: int = CHUNK) -> Iterator[bytes]:
    """Lines without their newline, each at most MAX_LINE bytes (longer ones cut, counted)."""
    lineno = 0
    partial: bytes | None = None  # start of an over-long line being skipped
    for chunk in iter_chunks(stream, problems, size):
        start = 0
        n = len(chunk)
        while start < n:
            end = chunk.find(b"\n", start)
            if end < 0:
                piece = chunk[start:]
                start = n
                if partial is None:
                    partial = piece[:MAX_LINE + 1]
                continue
            piece = chunk[start:end]
            start = end + 1
            if partial is not None:
                piece = partial
                partial = None
                if len(piece) > MAX_LINE:
                    lineno += 1
                    _overlong(problems, lineno, piece)
                    yield piece[:MAX_LINE]
                    continue
                # the continuation of a short partial is lost only if it was over-long
                lineno += 1
                yield piece
                continue
            lineno += 1
            if len(piece) > MAX_LINE:
                _overlong(problems, lineno, piece)
                yield piece[:MAX_LINE]
            else:
                yield piece
    if partial is not None:
        lineno += 1
        if len(partial) > MAX_LINE:
            _overlong(problems, lineno, partial)
        yield partial[:MAX_LINE]


def _overlong(problems: ReadProblems, lineno: int | None, piece: bytes) -> None:
    problems.overlong += 1
    if len(problems.overlong_samples) < 3:
        problems.overlong_samples.append((lineno, piece[:200]))


def _rotation_key(path: str) -> tuple[str, int, int]:
    """Sort key putting the oldest rotation first: access.log.3.gz, .2.gz, .1, access.log."""
    name = os.path.basename(path)
    m = _ROTATED.match(name)
    base = m.group("base") if m else name
    num = m.group("num") if m else None
    directory = os.path.dirname(path)
    if num is None:
        return (os.path.join(directory, base), 1, 0)
    digits = num.replace("-", "")
    value = int(digits)
    if len(digits) >= 8:  # dateext: access.log-20241201 — older dates first
        return (os.path.join(directory, base), 0, value)
    return (os.path.join(directory, base), 0, -value)


def rotation_base(path: str) -> str:
    """The live file a rotated one belongs to: `x/access.log.2.gz` -> `x/access.log`."""
    return _rotation_key(path)[0]


def order_rotated(paths: list[str]) -> list[str]:
    """Input paths in reading order: files of one rotated set oldest first, sets in the order
    the user named them first, stdin where it was given."""
    groups: dict[str, list[str]] = {}
    order: list[str] = []
    for p in paths:
        key = "-" if p == "-" else _rotation_key(p)[0]
        if key not in groups:
            groups[key] = []
            order.append(key)
        if p not in groups[key]:
            groups[key].append(p)
    out: list[str] = []
    for key in order:
        out.extend(sorted(groups[key], key=lambda p: _rotation_key(p)[1:]) if key != "-"
                   else groups[key])
    return out
