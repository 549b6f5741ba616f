#!/usr/bin/env python3
"""Streaming benchmark (issue: streaming runtime): decode tok/s under RAM budgets vs the disk's own bound.

    python tools/bench_stream.py --model tinyllama-q4.ellm [--zstd-model tinyllama-q4-zstd.ellm]
        [--budgets 25,50,75,100] [--gen-tokens 24] [--cgroup] [--json out.json]

Each configuration runs in a child process with the page cache dropped first (root), optionally inside a
cgroup v1 memory limit of budget + the child's measured baseline + slack, like llama.cpp's mmap runs in
shared/FACTS.md. The disk bound is this disk's cold sequential read speed, measured in the same run, divided
by the bytes streamed per token.
"""

from __future__ import annotations

import argparse
import json
import os

from edgellm.bench.runner import cold_read_mb_s, run_child
from edgellm.runtime.device import load_device

SLACK = 64 << 20  # cgroup headroom above budget + baseline: page-cache pages in flight, allocator slack


def _row(label, r, bound_mb_s):
    if "error" in r:
        return {"config": label, "error": r["error"]}
    per_tok = r["streamed_bytes_per_token"]
    bound = bound_mb_s * 1e6 / per_tok if per_tok else float("inf")
    return {
        "config": label,
        "decode_tps": r["decode_tps"],
        "bound_tps": bound,
        "of_bound": r["decode_tps"] / bound if per_tok else None,
        "streamed_mb_per_token": per_tok / 1e6,
        # one pass for the prompt (one prefill chunk) and one per generated token after the first
        "read_mb_per_token": r["bytes_read"] / max(r["generated_tokens"], 1) / 1e6,
        "overlap": r["overlap"],
        "rss_over_baseline_mb": r["rss_over_baseline"] / 1e6,
        "budget_mb": r["budget"] / 1e6,
        "plan_mb": r["plan_total"] / 1e6,
        "prompt_tps": r["prompt_tps"],
        "streamed_units": len(r["streamed"]),
        "cgroup_limit_mb": (r.get("cgroup_limit") or 0) / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--zstd-model", default=None, help="the same model converted with --codec zstd")
    ap.add_argument("--budgets", default="25,50,75,100", help="percent of the file size")
    ap.add_argument("--gen-tokens", type=int, default=24)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cgroup", action="store_true", help="run each child inside a memory cgroup")
    ap.add_argument("--devices", default="rpi5-nvme,rpi4-sdcard")
    ap.add_argument("--device-gen-tokens", type=int, default=6, help="tokens per emulated-device run (slow)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    size = os.path.getsize(a.model)
    disk = cold_read_mb_s(a.model)
    disk_direct = cold_read_mb_s(a.model, direct=True)
    print(
        f"model {a.model}: {size / 1e6:,.1f} MB; cold sequential read {disk:,.0f} MB/s buffered, "
        f"{disk_direct:,.0f} MB/s O_DIRECT"
    )
    base = {
        "model": a.model,
        "gen_tokens": a.gen_tokens,
        "prompt_tokens": a.prompt_tokens,
        "threads": a.threads,
        "context": 512,
    }
    rows = []
    for pct in [int(p) for p in a.budgets.split(",")]:
        budget = size * pct // 100
        for direct in (False, True):
            args = dict(base, budget=budget, direct_io=direct)
            limit = None
            if a.cgroup:
                probe = run_child(dict(args, gen_tokens=2, prompt_tokens=2))
                limit = budget + probe.get("baseline_rss", 0) + SLACK if "error" not in probe else None
            r = run_child(args, cold=True, memory_limit=limit)
            rows.append(
                _row(f"budget {pct}% {'O_DIRECT' if direct else 'fadvise'}", r, disk_direct if direct else disk)
            )
            print(json.dumps(rows[-1]))
    for name in [d for d in a.devices.split(",") if d]:
        dev = load_device(name)
        for path, codec in ((a.model, "file codec"), (a.zstd_model, "zstd")):
            if not path:
                continue
            r = run_child(
                dict(base, model=path, budget=size // 2, device=name, gen_tokens=a.device_gen_tokens, prompt_tokens=4),
                cold=True,
            )
            rows.append(_row(f"{name} 50% {codec}", r, dev.read_mb_s))
            print(json.dumps(rows[-1]))
    print(
        f"\n{'config':<28} {'tok/s':>7} {'bound':>7} {'of bound':>8} {'MB/tok':>7} {'overlap':>7} "
        f"{'RSS-base MB':>11} {'budget MB':>9}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<28} error: {r['error']}")
            continue
        ob = f"{100 * r['of_bound']:.0f}%" if r["of_bound"] is not None else "-"
        print(
            f"{r['config']:<28} {r['decode_tps']:>7.2f} {r['bound_tps']:>7.2f} {ob:>8} "
            f"{r['streamed_mb_per_token']:>7.1f} {100 * r['overlap']:>6.0f}% {r['rss_over_baseline_mb']:>11.0f} "
            f"{r['budget_mb']:>9.0f}"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"disk_mb_s": disk, "disk_direct_mb_s": disk_direct, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
