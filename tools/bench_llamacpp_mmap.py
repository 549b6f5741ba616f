#!/usr/bin/env python3
"""The llama.cpp anchor for streaming (issue: streaming runtime): llama-bench decoding a GGUF through mmap
inside a cgroup v1 memory limit, page cache dropped first, on this machine.

    python tools/bench_llamacpp_mmap.py --llama-bench PATH/llama-bench --model model-q4_0.gguf \
        [--limits 50,75,100,125] [--extra-mb 64] [--gen-tokens 32] [--threads 2]

The limit is a share of the GGUF file plus --extra-mb for llama.cpp's own buffers (KV cache, compute
scratch), the same headroom edgellm's children get above their budget. Under cyclic access the page cache
keeps nothing once the limit is below the file, so every token re-reads the weights.
"""

from __future__ import annotations

import argparse
import json
import os

from edgellm.bench.runner import cold_read_mb_s, drop_caches, run_limited


def run(bench: str, model: str, threads: int, gen: int, limit: int | None) -> dict:
    cmd = [bench, "-m", model, "-t", str(threads), "-p", "0", "-n", str(gen), "-r", "1", "-o", "json"]
    drop_caches()
    p, _ = run_limited(cmd, limit, timeout=3600)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(p.stdout)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--limits", default="50,75,100,125")
    ap.add_argument("--extra-mb", type=float, default=64)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    size = os.path.getsize(a.model)
    print(f"{a.model}: {size / 1e6:,.0f} MB; cold sequential read here: {cold_read_mb_s(a.model):,.0f} MB/s")
    print(f"{'limit':>6} {'cgroup MB':>10} {'decode tok/s':>12}")
    for pct in [int(p) for p in a.limits.split(",")]:
        limit = int(size * pct / 100 + a.extra_mb * 1e6)
        r = run(a.llama_bench, a.model, a.threads, a.gen_tokens, limit)
        tps = f"{r['avg_ts']:.2f}" if "avg_ts" in r else "-"
        print(
            f"{pct:>5}% {limit / 1e6:>10,.0f} {tps:>12}" + (f"  error: {r['error']}" if "error" in r else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
