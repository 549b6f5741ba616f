#!/usr/bin/env python3
"""Decode tok/s by thread count, on a quiet machine and with a competing busy process.

    python tools/bench_threads.py MODEL.ellm [MODEL2.ellm ...] [--threads default,1,2] [--busy 0,1]
        [--tokens 128] [--repeat 3] [--env NAME=VALUE ...] [--json FILE]

Each cell runs in its own process (numba's thread pool and OpenMP settings are fixed per process), with the
model pinned in RAM. `--busy N` starts N processes that spin on a core for the whole cell: what a phone or a
Pi running anything else looks like. A cell prints the median decode tok/s of its repeats (min-max beside);
the last column of each row is the default's ratio to the best fixed thread count of that row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, edgellm
path, threads, tokens, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kw = {} if threads == "default" else {"threads": int(threads)}
with edgellm.load(path, ram_budget="100GB", **kw) as m:
    ids = m.tokenizer.encode("Once upon a time")
    # warm-up: compile and page everything in
    for _ in m.stream(ids, max_tokens=8):
        pass
    out = []
    for _ in range(repeat):
        for c in m.stream(ids, max_tokens=tokens, temperature=1.0, seed=len(out)):
            last = c
        out.append(last.stats.decode_tps)
print(json.dumps(out))
"""

SPIN = "import time\nt = time.time() + 3600\nwhile time.time() < t:\n    pass\n"


def cell(model: str, threads: str, busy: int, tokens: int, repeat: int, env: dict) -> list[float]:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        time.sleep(0.2 if busy else 0)
        res = subprocess.run(
            [sys.executable, "-c", CHILD, model, threads, str(tokens), str(repeat)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=1800,
        )
        if res.returncode:
            raise SystemExit(f"bench_threads: child failed on {model} threads={threads}:\n{res.stderr}")
        return json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", default="default,1,2")
    ap.add_argument("--busy", default="0,1", help="numbers of competing busy processes, one row each")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the measured process")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    env = dict(e.split("=", 1) for e in a.env)
    choices = a.threads.split(",")
    rows = []
    print(f"decode tok/s, median of {a.repeat} x {a.tokens} tokens (min-max); env {env or 'as is'}")
    print(f"{'model':<28} {'busy':>4} " + " ".join(f"{'threads=' + t:>22}" for t in choices) + "  default/best")
    for model in a.models:
        for busy in (int(b) for b in a.busy.split(",")):
            res = {t: cell(model, t, busy, a.tokens, a.repeat, env) for t in choices}
            med = {t: statistics.median(v) for t, v in res.items()}
            fixed = [med[t] for t in choices if t != "default"]
            ratio = med["default"] / max(fixed) if "default" in med and fixed else float("nan")
            cells = " ".join(f"{med[t]:>9.1f} ({min(res[t]):.0f}-{max(res[t]):.0f})".rjust(22) for t in choices)
            print(f"{os.path.basename(model):<28} {busy:>4} {cells}  {ratio:>8.2f}", flush=True)
            rows.append({"model": model, "busy": busy, "tps": res, "median": med, "default_vs_best": ratio})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": env, "tokens": a.tokens, "repeat": a.repeat, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
