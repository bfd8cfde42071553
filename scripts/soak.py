"""Soak `claimscope up`: memory of every process it runs, sampled while it runs for a while.

    .venv/bin/python scripts/soak.py --rate 500 --minutes 30 --out docs/benchmarks/soak.json

Starts `claimscope up --rate R --duration ...` (embedded broker and Redis, their default
bounds), and every `--every` seconds sums the resident memory (VmRSS) of its process tree by
kind: the broker (Tansu), redis-server, workers, scoring processes, and `up` itself. Prints
one line per sample and writes them all, with up's own last progress line, as JSON. Memory
that is bounded shows as a plateau (Redis at its maxmemory) or a saw-tooth (the broker,
rolled over at its bound); growth without bound shows as a trend in the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from stream.dev.up import rss_mb

KINDS = (("broker", "tansu"), ("redis", "redis-server"), ("scoring", "stream.scoring"),
         ("workers", "stream worker"))


def tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in
                         Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def sample(root: int) -> dict[str, float]:
    mb = dict.fromkeys([k for k, _ in KINDS] + ["up"], 0.0)
    for p in tree(root):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        rss = rss_mb(p)
        if rss is None:
            continue
        kind = next((k for k, needle in KINDS if needle in cmd), "up")
        mb[kind] += rss
    mb["total"] = sum(mb.values())
    return {k: round(v, 1) for k, v in mb.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=Path("soak.json"))
    a = ap.parse_args()
    exe = Path(sys.executable).with_name("claimscope")
    log = a.out.with_suffix(".log")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLAIMSCOPE_BROKER", "CLAIMSCOPE_REDIS_URL")}
    with log.open("w") as out:
        up = subprocess.Popen([str(exe), "up", "--rate", str(a.rate), "--duration",
                               str(a.minutes * 60)], stdout=out, stderr=subprocess.STDOUT,
                              env=env)
        started, samples = time.monotonic(), []
        while up.poll() is None:
            time.sleep(a.every)
            if up.poll() is not None:
                break
            s = {"t_s": round(time.monotonic() - started), **sample(up.pid)}
            samples.append(s)
            print(json.dumps(s), flush=True)
    lines = log.read_text().splitlines()
    result = {"command": f"claimscope up --rate {a.rate:g} --duration {a.minutes * 60:g}",
              "exit_code": up.returncode, "samples": samples,
              "progress": [x for x in lines if x.startswith("up ")][-1:],
              "summary": lines[-1] if lines else "",
              "rolled_over": sum("rolled over" in x for x in lines),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    a.out.write_text(json.dumps(result, indent=2))
    print(result["summary"])


if __name__ == "__main__":
    main()
