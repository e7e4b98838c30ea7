#!/usr/bin/env python3
"""Benchmark `relayguard logs` against GoAccess and fail2ban-regex on a 1,000,000-line log.

The combined-format log is generated reproducibly (fixed seed): a site's ordinary traffic with
referers and user agents, plus one open-proxy incident (CONNECT to port 25, absolute-URI
browsing, refused probes). Each tool runs as a separate process under `/usr/bin/time`, which
gives wall time and peak RSS; lines/s and ratios are printed. Not a test: numbers depend on
the machine. Peer tools come from Debian (`apt-get install -y goaccess fail2ban`); a missing
one is reported and skipped.

    python bench/logs_bench.py [--lines 1000000] [--f2b-lines 200000] [--repeat 5]
                               [--attack-lines 200000] [--keep DIR]

fail2ban-regex runs ~5k lines/s, so by default it reads only the first `--f2b-lines` lines
and its rate is computed on those (say `--f2b-lines 0` for the whole file). relayguard's
figures are medians of `--repeat` runs (the best run is shown beside them), with its modules
byte-compiled as an installed package has them: a PYTHONDONTWRITEBYTECODE environment would
otherwise recompile every module on every run, which no installation does.

Then the worst case for relayguard: a spam cannon's log (`--attack-lines`, every line a proxy
request, each parsed and judged in Python) against GoAccess on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 20261125
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0", "python-requests/2.31.0", "-",
)
PAGES = ["/", "/index.html", "/about/", "/blog/", "/contact/", "/css/site.css", "/js/app.js",
         "/img/logo.png", "/favicon.ico", "/robots.txt", "/feed.xml"] + \
        [f"/blog/{y}/{m:02d}/post-{i}/" for y in (2024, 2025) for m in range(1, 13)
         for i in range(3)] + [f"/img/photo-{i}.jpg" for i in range(40)]


def generate(path: Path, lines: int, seed: int = SEED, attack: tuple[int, int] | None = None,
             attack_every: int = 5) -> dict[str, int]:
    """Write the benchmark log; return the ground truth of the embedded incident: every
    `attack_every`-th line of lines [start, end) of `attack` (default: a hundredth of the
    log from its middle) is a proxy request. `attack=(0, lines), attack_every=1` writes a
    spam cannon's log: nothing but proxy requests."""
    rnd = random.Random(seed)
    clients = [f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}."
               f"{rnd.randrange(1, 255)}" for _ in range(5000)]
    sizes = {p: rnd.randrange(300, 90000) for p in PAGES}
    spammers = [f"185.220.{rnd.randrange(256)}.{rnd.randrange(1, 255)}" for _ in range(30)]
    t0 = 1772323200  # 2026-03-01T00:00:00Z
    truth = {"connect_smtp": 0, "absolute_relayed": 0, "refused": 0}
    attack_start, attack_end = attack or (lines // 2, lines // 2 + lines // 100)
    out = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            t = time.gmtime(t0 + i * 86400 * 3 // lines)  # three days of traffic
            stamp = (f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:"
                     f"{t.tm_min:02d}:{t.tm_sec:02d} +0000")
            if attack_start <= i < attack_end and i % attack_every == 0:
                r = i % 3
                ip = spammers[i % len(spammers)]
                if r == 0:
                    req, status, size = f"CONNECT mx{i % 97}.mail.example:25 HTTP/1.0", 200, "-"
                    truth["connect_smtp"] += 1
                elif r == 1:
                    req = f"GET http://shop{i % 13}.example/item/{i} HTTP/1.1"
                    status, size = 200, str(rnd.randrange(2000, 60000))
                    truth["absolute_relayed"] += 1
                else:
                    req, status, size = "CONNECT 10.0.0.1:22 HTTP/1.0", 403, "319"
                    truth["refused"] += 1
                ref, agent = "-", "-"
            else:
                ip = clients[min(int(rnd.paretovariate(1.2)) - 1, len(clients) - 1)]
                page = rnd.choice(PAGES)
                roll = rnd.random()
                if roll < 0.90:
                    status, size = 200, str(sizes[page] + rnd.randrange(0, 8))
                elif roll < 0.96:
                    status, size = 304, "-"
                else:
                    status, size, page = 404, "196", f"/wp-login.php?x={rnd.randrange(9999)}"
                req = f"{rnd.choice(('GET', 'GET', 'GET', 'HEAD', 'POST'))} {page} HTTP/1.1"
                ref = "-" if rnd.random() < 0.4 else \
                    f"https://www.example.com{rnd.choice(PAGES)}"
                agent = rnd.choice(AGENTS)
            out.append(f'{ip} - - [{stamp}] "{req}" {status} {size} "{ref}" "{agent}"\n')
            if len(out) >= 10000:
                fh.write("".join(out))
                out.clear()
        fh.write("".join(out))
    return truth


def found(report: Path, truth: dict[str, int]) -> str:
    """relayguard's incident counts beside the generator's truth, flagged when they differ."""
    doc = json.loads(report.read_text())
    incs = {i["kind"]: (i["events"], i["outcomes"]) for i in doc["stats"]["incidents"]}
    ok = incs.get("proxy-smtp") == (truth["connect_smtp"], {"relayed": truth["connect_smtp"]}) \
        and incs.get("proxy-http") == (truth["absolute_relayed"],
                                       {"relayed": truth["absolute_relayed"]}) \
        and incs.get("proxy-connect") == (truth["refused"], {"refused": truth["refused"]})
    return (f"relayguard found: {incs} (truth CONNECT:25 {truth['connect_smtp']}, "
            f"absolute-URI {truth['absolute_relayed']}, refused CONNECT:22 {truth['refused']})"
            f"{'' if ok else '  <-- MISMATCH'}")


def timed(argv: list[str], stdout: int | None = subprocess.DEVNULL,
          env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB of the largest process, exit status) via /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = ["/usr/bin/time", "-f", "%e %M", "-o", tf.name, *argv]
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=stdout, stderr=subprocess.DEVNULL, check=False,
                              env=env)
        wall = time.perf_counter() - start
        fields = Path(tf.name).read_text().split()
    rss = int(fields[-1]) / 1024 if fields else float("nan")
    return wall, rss, proc.returncode


def median_runs(argv: list[str], repeat: int,
                env: dict[str, str]) -> tuple[float, float, float, int]:
    """(median wall, best wall, largest peak RSS, last exit status) over `repeat` runs."""
    walls, rsses, rc = [], [], 0
    for _ in range(max(1, repeat)):
        wall, rss, rc = timed(argv, env=env)
        walls.append(wall)
        rsses.append(rss)
    return statistics.median(walls), min(walls), max(rsses), rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--f2b-lines", type=int, default=200_000,
                    help="lines fed to fail2ban-regex (0 = all)")
    ap.add_argument("--attack-lines", type=int, default=200_000,
                    help="lines of the all-proxy-requests log also timed (0 = skip it)")
    ap.add_argument("--keep", type=Path, help="directory to keep the log and reports in")
    ap.add_argument("--repeat", type=int, default=5,
                    help="runs of each relayguard measurement (the median is reported)")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="rg-logs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "access.log"
    t = time.perf_counter()
    truth = generate(log, args.lines)
    print(f"generated {args.lines:,} lines ({log.stat().st_size / 2**20:.0f} MiB) in "
          f"{time.perf_counter() - t:.1f}s, seed {SEED}; incident truth: {truth}")
    subprocess.run(["cat", str(log)], stdout=subprocess.DEVNULL, check=False)  # warm the cache
    load_before = os.getloadavg()

    results: list[tuple[str, int, float, float, str]] = []
    # relayguard: the real command line, JSON to a file, modules byte-compiled (warm-up run)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    report = work / "relayguard.json"

    def rg_logs(path: Path, *extra: str) -> list[str]:
        """The relayguard logs command line timed here, on `path`."""
        return [sys.executable, "-m", "relayguard", "logs", str(path), "--format", "json",
                "-o", str(report), *extra]

    rg = rg_logs(log)
    timed(rg, env=env)
    wall, best, rss, rc = median_runs(rg, args.repeat, env)
    if rc not in (0, 1):
        print(f"relayguard failed with exit status {rc}")
        return 2
    print(found(report, truth))
    results.append(("relayguard logs", args.lines, wall, rss,
                    f"json report, {os.cpu_count()} cores; best {args.lines / best:,.0f}/s"))
    wall, best, rss, _ = median_runs(rg_logs(log, "-j", "1"), args.repeat, env)
    results.append(("relayguard logs -j 1", args.lines, wall, rss,
                     f"one core; best {args.lines / best:,.0f}/s"))
    wall, best, rss, _ = median_runs([sys.executable, "-m", "relayguard", "--version"],
                                    args.repeat, env)
    results.append(("(start-up)", 0, wall, rss, "relayguard --version"))
    tiny = work / "ten-lines.log"
    with open(log, "rb") as src:
        tiny.write_bytes(b"".join(src.readline() for _ in range(10)))
    wall, best, rss, _ = median_runs(rg_logs(tiny), args.repeat, env)
    results.append(("(logs fixed cost)", 0, wall, rss, "relayguard logs on 10 lines"))
    probe = ("import sys,time; from relayguard.logs.analyze import analyse; "
             "t=time.perf_counter(); analyse([sys.argv[1]]); "
             "print(time.perf_counter()-t)")
    inner = statistics.median(
        float(subprocess.run([sys.executable, "-c", probe, str(log)], check=True, env=env,
                             capture_output=True, text=True).stdout)
        for _ in range(max(1, args.repeat)))
    results.append(("relayguard (analysis)", args.lines, inner, float("nan"),
                    "in-process analyse(), start-up excluded"))

    if shutil.which("goaccess"):
        wall, rss, rc = timed(["goaccess", str(log), "--log-format=COMBINED", "--no-global-config",
                               "-o", str(work / "goaccess.json")])
        results.append(("goaccess", args.lines, wall, rss, f"exit {rc}, JSON report"))
    else:
        print("goaccess not installed (apt-get install -y goaccess): skipped")
    if shutil.which("fail2ban-regex"):
        n = args.f2b_lines or args.lines
        part = log
        if n < args.lines:
            part = work / "f2b-part.log"
            with open(log, "rb") as src, open(part, "wb") as dst:
                for i, line in enumerate(src):
                    if i >= n:
                        break
                    dst.write(line)
        wall, rss, rc = timed(["fail2ban-regex", str(part),
                               r'^<HOST> \S+ \S+ \[\] "CONNECT [^"]*" \d+'])
        results.append(("fail2ban-regex", n, wall, rss, f"CONNECT filter, {n:,} lines"))
    else:
        print("fail2ban not installed (apt-get install -y fail2ban): skipped")
    wall, rss, _ = timed(["grep", "-c", "CONNECT", str(log)])
    results.append(("grep -c CONNECT", args.lines, wall, rss, "lower bound: no parsing"))

    rg_rate = args.lines / results[0][2]
    print()
    print(f"{'tool':<24}{'lines':>11}{'seconds':>10}{'lines/s':>14}{'peak RSS':>11}"
          f"{'relayguard x':>14}  note")
    for name, n, wall, rss, note in results:
        rate = n / wall if n else 0.0
        ratio = f"{rg_rate / rate:,.1f}x" if rate else "-"
        mem = f"{rss:>9.0f}MB" if rss == rss else f"{'-':>11}"
        speed = f"{rate:>14,.0f}" if rate else f"{'-':>14}"
        print(f"{name:<24}{n:>11,}{wall:>10.2f}{speed}{mem}{ratio:>14}  {note}")
    print(f"\nrelayguard: {rg_rate:,.0f} lines/s end to end (start-up included), "
          f"{args.lines / inner:,.0f} lines/s analysis only; goal >= 2,000,000; "
          f"peak RSS {results[0][3]:.0f} MB (largest process; goal <= 200)")
    goaccess = next((r for r in results if r[0] == "goaccess"), None)
    if goaccess is not None:
        ga_rate = goaccess[1] / goaccess[2]
        print(f"vs GoAccess: {rg_rate / ga_rate:,.1f}x end to end, "
              f"{args.lines / inner / ga_rate:,.1f}x analysis only; goal >= 40x")
    if args.attack_lines:
        # the worst case: a spam cannon's log, every line a proxy request that relayguard
        # parses and judges in Python, where the 1M-line log above has 2,000 of them
        attack = work / "attack.log"
        truth = generate(attack, args.attack_lines, attack=(0, args.attack_lines),
                         attack_every=1)
        wall, best, rss, _ = median_runs(rg_logs(attack), max(1, args.repeat // 2), env)
        print(f"\nspam-cannon log: {args.attack_lines:,} lines, every one a proxy request")
        print(found(report, truth))
        rg_attack = args.attack_lines / wall
        print(f"relayguard logs   {wall:8.2f} s {rg_attack:>12,.0f} lines/s {rss:>6.0f}MB")
        if shutil.which("goaccess"):
            ga_wall, ga_rss, _ = timed(["goaccess", str(attack), "--log-format=COMBINED",
                                        "--no-global-config", "-o", str(work / "ga2.json")])
            ga_attack = args.attack_lines / ga_wall
            print(f"goaccess          {ga_wall:8.2f} s {ga_attack:>12,.0f} lines/s "
                  f"{ga_rss:>6.0f}MB   relayguard {rg_attack / ga_attack:.1f}x")
    load = os.getloadavg()
    print("load average (1 min) before the runs "
          f"{load_before[0]:.2f}, after {load[0]:.2f}"
          f"{': other processes shared the CPUs' if max(load_before[0], load[0]) > 0.5 else ''}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
