#!/usr/bin/env python3
"""Same-run ratios against llama.cpp: decode, prefill-128 and prefill-512 of our .ellm and its GGUF twin.

    python tools/bench_vs_llamacpp.py --llama-bench BIN/llama-bench OURS.ellm=THEIRS.gguf [...]
        [--threads 2] [--repeat 3] [--gen-tokens 64] [--prompts 128,512] [--depth N] [--json out.json]

Each pair is measured alternately (ours, theirs, ours, theirs ...) so a VM's drift hits both sides alike; the
figures are medians. Ours: tools/bench_kernels.py's in-RAM measurement (random prompt ids, greedy decode from
a one-token prompt, as llama-bench's tg decodes from an empty context);
theirs: `llama-bench -t THREADS -p P -n N -r 1 -o json`. Also the decode bound the memory allows: stored
weight bytes per token over the memory read bandwidth, measured before every round (on a shared VM it moves
with the neighbours: 45 and 80 GB/s an hour apart on one host) and taken as the median, its range printed.
`--depth N` adds decode after N tokens of context (a long chat; ours after an N-token random prompt, theirs
`llama-bench -p 0 -d N`), where attention over the KV cache costs what the weights do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_kernels  # noqa: E402


def llama_bench(exe: str, gguf: str, threads: int, prompts: list[int], gen: int, depth: int) -> dict[str, float]:
    """{"decode": tok/s, "prefill-P": tok/s ..., "decode@D": tok/s} from llama-bench (a second run for depth)."""
    base = [exe, "-m", gguf, "-t", str(threads), "-n", str(gen), "-r", "1", "-o", "json"]
    out = {}
    for extra in [["-p", ",".join(map(str, prompts))]] + ([["-p", "0", "-d", str(depth)]] if depth else []):
        p = subprocess.run([*base, *extra], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"bench_vs_llamacpp: llama-bench failed:\n{p.stderr[-2000:]}")
        for r in json.loads(p.stdout):
            key = f"prefill-{r['n_prompt']}" if not r["n_gen"] else "decode"
            out[key + (f"@{r['n_depth']}" if r.get("n_depth") else "")] = float(r["avg_ts"])
    return out


def ours(path: str, threads: int, prompts: list[int], gen: int, depth: int) -> dict[str, float]:
    """Decode from a one-token prompt (positions 1..gen, as llama-bench's tg test decodes from an empty
    context: attention over a long prefix would cost us what it does not cost them), prefill per prompt size,
    and with a depth decode after a prompt of that many tokens."""
    r = bench_kernels.bench(path, 1, gen, threads, 1)
    out = {"decode": r["decode_tps"], "weight_bytes": r["weight_bytes_per_token"]}
    for n in prompts:
        out[f"prefill-{n}"] = bench_kernels.bench(path, n, 2, threads, 1)["prefill_tps"]
    if depth:
        out[f"decode@{depth}"] = bench_kernels.bench(path, depth, gen, threads, 1)["decode_tps"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", help="OURS.ellm=THEIRS.gguf")
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--prompts", default="128,512")
    ap.add_argument("--depth", type=int, default=0, help="also decode after this many tokens of context")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    prompts = [int(x) for x in a.prompts.split(",")]
    keys = ["decode"] + [f"prefill-{n}" for n in prompts] + ([f"decode@{a.depth}"] if a.depth else [])
    mems: list[float] = []
    rows = []
    for pair in a.pairs:
        mine, theirs = pair.split("=", 1)
        runs: dict[str, list[dict]] = {"ours": [], "llama.cpp": []}
        for _ in range(a.repeat):
            mems.append(bench_kernels.memory_read_gb_s())
            runs["ours"].append(ours(mine, a.threads, prompts, a.gen_tokens, a.depth))
            runs["llama.cpp"].append(llama_bench(a.llama_bench, theirs, a.threads, prompts, a.gen_tokens, a.depth))
        med = {side: {k: statistics.median(r[k] for r in rs) for k in keys} for side, rs in runs.items()}
        rows.append({"ours": mine, "theirs": theirs, "median": med, "runs": runs})
    mem = statistics.median(mems)
    for r in rows:
        r["decode_bound_tps"] = mem * 1e9 / r["runs"]["ours"][0]["weight_bytes"]
    print(
        f"memory read bandwidth: {mem:.1f} GB/s (median of {len(mems)}, {min(mems):.1f}-{max(mems):.1f}); "
        f"{a.threads} threads; medians of {a.repeat} alternated runs\n"
    )
    print("| model | " + " | ".join(f"{k} ours / llama.cpp (ratio)" for k in keys) + " | decode % of memory bound |")
    print("|---|" + "---|" * (len(keys) + 1))
    for r in rows:
        m = r["median"]
        ours_, theirs_ = m["ours"], m["llama.cpp"]
        cells = [f"{ours_[k]:.1f} / {theirs_[k]:.1f} ({ours_[k] / theirs_[k]:.2f}×)" for k in keys]
        share = 100 * m["ours"]["decode"] / r["decode_bound_tps"]
        print(f"| {Path(r['ours']).name} | " + " | ".join(cells) + f" | {share:.0f}% of {r['decode_bound_tps']:.0f} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"memory_gb_s": mem, "memory_gb_s_all": mems, "threads": a.threads, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
