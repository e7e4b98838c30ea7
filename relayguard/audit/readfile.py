"""The one way every auditor reads a config file: bounded, regular files only, clear errors.

A config can name any path (`Include /dev/zero`, `include /dev/urandom;`), so the size is
never taken from `st_size` (0 for devices) but by reading at most one byte past the limit,
and devices, FIFOs and sockets are refused before they are opened (opening a FIFO blocks).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from relayguard.errors import InputError

MAX_CONFIG_BYTES = 16 * 1024 * 1024  # no real server config is bigger; refuse to slurp a disk


def read_bytes(path: Path, shown: str | None = None, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """A regular file's bytes; InputError naming `shown` (default: the path) otherwise."""
    name = shown or str(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise InputError(name, "is a directory, expected a config file")
        if not stat.S_ISREG(mode):
            raise InputError(name, "not a regular file (a device, FIFO or socket); "
                             "not a config file")
        with path.open("rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since the stat
                raise InputError(name, "not a regular file; not a config file")
            data = fh.read(limit + 1)
    except PermissionError:
        raise InputError(name, "permission denied (run as root to read it)") from None
    except FileNotFoundError:
        raise InputError(name, "no such file") from None
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(name, f"larger than {limit} bytes; not a config file")
    return data


def read_text(path: Path, shown: str | None = None, *, errors: str = "replace",
              limit: int = MAX_CONFIG_BYTES) -> str:
    """A config file as text; InputError for binary data (a NUL byte, with its line)."""
    data = read_bytes(path, shown, limit)
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise InputError(shown or str(path), "binary data (NUL byte): not a text config file",
                         line)
    return data.decode("utf-8", errors=errors)


def peek(path: Path, size: int) -> str:
    """The first `size` bytes of a regular file as text, '' when it is not one or unreadable:
    what recognisers look at to guess which server a file belongs to."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return ""
        with path.open("rb") as fh:
            return fh.read(size).decode("utf-8", errors="replace")
    except OSError:
        return ""


def lines_of(path: str | Path) -> list[str] | None:
    """A config file's lines as they are now (to quote them in an edit); None if unreadable."""
    try:
        return read_text(Path(path), errors="surrogateescape").splitlines()
    except InputError:
        return None
