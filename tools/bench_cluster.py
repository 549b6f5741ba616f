#!/usr/bin/env python3
"""A model pipelined over local stages against one process, same run (issue 17's benchmark).

    python tools/bench_cluster.py MODEL.ellm [--stages 2] [--budget 50%] [--gen-tokens 32] [--repeat 2]

Rows, alternated --repeat times (medians), each after an untimed warm-up generation (the kernels load in every
process): one process under --budget (streaming); `local:N` stages each
under --budget (together N times the memory, so less streams); and the same two with everything pinned, whose
difference per token is what the hops cost (Ray calls and the residual stream crossing processes). Greedy,
speculation off (one token a pass), a random prompt of --prompt-tokens ids. The stages share this machine's
cores and disk, as boards on a LAN would not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import edgellm


def _run(path: str, budget, cluster: str | None, a) -> dict:
    kw = {"cluster": cluster, "node_budget": budget} if cluster else {"ram_budget": budget}
    t0 = time.perf_counter()
    m = edgellm.load(path, context=a.prompt_tokens + a.gen_tokens + 16, **kw)
    load_s = time.perf_counter() - t0
    try:
        rng = np.random.default_rng(0)
        prompt = [int(i) for i in rng.integers(3, m.config.vocab_size, a.prompt_tokens)]
        m.generate(prompt[::-1], max_tokens=4, speculative=False)  # loads every kernel in every process: not timed
        with m.stream(prompt, max_tokens=a.gen_tokens, speculative=False) as chunks:
            parts = list(chunks)
        s = parts[-1].stats
        plan = m.plan
        return {
            "load_s": load_s,
            "prompt_tps": s.prompt_tps,
            "decode_tps": s.decode_tps,
            "ms_per_token": 1e3 / s.decode_tps if s.decode_tps else 0.0,
            "streamed_mb_per_token": plan.streamed_bytes_per_pass / 1e6,
            "split": plan.describe().splitlines()[1:-1] if cluster else None,
            "tokens": [c.token for c in parts if getattr(c, "token", None) is not None],
        }
    finally:
        m.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--budget", default="50%", help="one process's budget, and each stage's")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    local = f"local:{a.stages}"
    configs = {
        f"1 process, {a.budget}": (a.budget, None),
        f"{local}, {a.budget} each": (a.budget, local),
        "1 process, all pinned": ("100%", None),
        f"{local}, all pinned": ("100%", local),
    }
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    for _ in range(a.repeat):
        for name, (budget, cluster) in configs.items():
            runs[name].append(_run(a.model, budget, cluster, a))
            print(name, json.dumps({k: v for k, v in runs[name][-1].items() if k != "tokens"}), flush=True)
    med = {k: {m: statistics.median(r[m] for r in rs) for m in ("decode_tps", "prompt_tps", "ms_per_token")}
           for k, rs in runs.items()}  # fmt: skip
    first = next(iter(configs))
    print(f"\n{'configuration':<28} {'decode tok/s':>12} {'vs 1 process':>12} {'prefill tok/s':>13} "
          f"{'streamed MB/token':>17}")  # fmt: skip
    for k in configs:
        ratio = med[k]["decode_tps"] / med[first]["decode_tps"] if med[first]["decode_tps"] else 0.0
        print(f"{k:<28} {med[k]['decode_tps']:>12.2f} {ratio:>11.2f}x {med[k]['prompt_tps']:>13.1f} "
              f"{runs[k][0]['streamed_mb_per_token']:>17.1f}")  # fmt: skip
    hop = med[f"{local}, all pinned"]["ms_per_token"] - med["1 process, all pinned"]["ms_per_token"]
    print(f"\nper-token cost of the hops ({a.stages} stages, all pinned): {hop:.2f} ms")
    same = all(r["tokens"] == runs[first][0]["tokens"] for rs in runs.values() for r in rs)
    print(f"greedy tokens identical across every run: {'yes' if same else 'NO'}")
    for line in runs[f"{local}, {a.budget} each"][0]["split"] or []:
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "medians": med, "hop_ms": hop}, f, indent=1)


if __name__ == "__main__":
    main()
