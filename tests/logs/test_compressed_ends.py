"""Compressed logs that end badly, made from a real public log (secrepo's access log) with the
real `gzip` and `xz` tools: whatever the decompressor could decode is analysed, every line of
it, as `gzip -dc` / `xz -dc` give it back; a stream that is complete is not called truncated.
A server that crashed mid-rotation leaves such files, and their last lines matter most."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from relayguard.logs.analyze import analyse

SECREPO = Path("/work/shared/data/real-logs/apache-secrepo-2018/access-2018-12-15.log.gz")
if not SECREPO.is_file():
    SECREPO = Path(__file__).resolve().parents[1] / "data" / "real-logs" / \
        "apache-secrepo-2018" / "access-2018-12-15.log.gz"
pytestmark = pytest.mark.skipif(not SECREPO.is_file(), reason="real-logs data set not present")


def _compressed(tool: str) -> bytes:
    raw = gzip.decompress(SECREPO.read_bytes())
    return subprocess.run([tool, "-c"], input=raw, capture_output=True, check=True,
                          timeout=60).stdout


def _lines_decodable(tool: str, data: bytes) -> int:
    """Lines the tool itself gets out of `data` (a last line without newline counts)."""
    out = subprocess.run([tool, "-dc"], input=data, capture_output=True, check=False,
                         timeout=60).stdout
    return out.count(b"\n") + (1 if out and not out.endswith(b"\n") else 0)


@pytest.mark.parametrize("tool", ["gzip", "xz"])
def test_a_truncated_file_gives_every_line_it_holds(tool: str, tmp_path: Path) -> None:
    full = _compressed(tool)
    cut = tmp_path / f"access.log.1.{tool}"
    cut.write_bytes(full[: len(full) * 2 // 3])
    want = _lines_decodable(tool, cut.read_bytes())
    assert 1000 < want < 4961
    report = analyse([str(cut)])
    assert [e.source for e in report.errors] == [str(cut)]
    assert "truncated" in report.errors[0].message
    # once up to a 64 KiB piece of decoded text (300-400 lines here) was lost at the cut
    assert report.stats["lines"] == want


def test_trailing_garbage_after_a_whole_gzip_member_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log.2.gz"
    path.write_bytes(_compressed("gzip") + b"garbage after the member\n")
    report = analyse([str(path)])
    assert report.stats["lines"] == 4961 and report.stats["unparsed"] == 0
    assert len(report.errors) == 1  # said, as gzip says "trailing garbage ignored"


def test_xz_stream_padding_is_valid_not_truncation(tmp_path: Path) -> None:
    # the .xz format allows zero bytes after a stream (Stream Padding); `xz -dc` reads it
    # silently, so it is a complete file
    path = tmp_path / "access.log.3.xz"
    path.write_bytes(_compressed("xz") + bytes(512))
    assert _lines_decodable("xz", path.read_bytes()) == 4961
    report = analyse([str(path)])
    assert report.errors == () and report.stats["lines"] == 4961
