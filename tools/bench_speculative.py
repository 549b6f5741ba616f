#!/usr/bin/env python3
"""Speculative decoding benchmark: decode tok/s with speculation off and on, same run, same prompts.

    python tools/bench_speculative.py MODEL.ellm [MODEL2.ellm ...] [--budgets ram,50] [--gen-tokens 128]
        [--cgroup] [--repeat 3] [--draft DRAFT.ellm] [--device rpi5-nvme]
        [--prompts rewrite,open] [--json out.json]

Per model, budget (`ram`: the default, everything pinned; N: N% of the file, so layers stream) and prompt:
greedy chat replies (ending at the end of turn, at most --gen-tokens) with speculation off, then on, each in a
child process (edgellm.bench.child, as `edgellm bench` runs them). Prompts: grounded requests, whose answers
repeat their source (rewrite, summarise, edit code, quote), and open ones. Prints tok/s off and on, the ratio,
tokens per pass and whether the replies are token-identical (they must be). Off and on alternate --repeat
times (medians, tokens per pass too: the drafts' lengths follow measured pass times, so they vary by run).
--draft adds a third run per pair: speculation drafted by that model, loaded inside the same budget.
--cgroup runs every child in a cgroup v1 memory limit of budget + its baseline + 64 MiB, with the page cache
dropped first. --device emulates a device's flash (its steady read rate makes a ratio near
1.0, the open prompts', measurable on a VM whose disk speed drifts between runs).

The real SmolLM2-135M-Instruct: convert its GGUF with the default --quant, which keeps its Q4_1 weights
exactly (q4a). `--quant q4` quantizes them a second time (KL 0.395 from the float weights), and that model
mostly stops copying its source: 2.4 tokens a pass on the rewrite prompt instead of 4.3, and a quote that is
not one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from edgellm.bench.runner import run_child

SLACK = 64 << 20
SOURCE = (
    "Speculative decoding drafts several tokens cheaply and lets the large model check them all in one pass. "
    "Each pass over the weights reads every layer once, so when the drafts are right the model produces several "
    "tokens for the price of one. The output does not change: a drafted token is kept only when the model would "
    "have produced it anyway, and the first disagreement is replaced by the model's own choice."
)
CODE = """def total(items):
    result = 0
    for item in items:
        result = result + item.price * item.count
    return result
"""
PROMPTS = {
    "grounded: rewrite": f"Rewrite this paragraph as a bulleted list, keeping its sentences:\n\n{SOURCE}",
    "grounded: summarise": f"Summarise this paragraph in two sentences, using its own words:\n\n{SOURCE}",
    "grounded: edit code": f"Rename the function `total` to `order_total` in this code, showing all of it:\n\n{CODE}",
    "grounded: quote": f"Quote the second and third sentences of this text exactly:\n\n{SOURCE}",
    "open: story": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "open: tips": "Give me five tips for learning to cook at home.",
}


def _run(model: str, budget: int | None, prompt: str, mode: str, a, limit: int | None) -> dict:
    args = {
        "model": model,
        "budget": budget,
        "messages": [{"role": "user", "content": prompt}],
        "gen_tokens": a.gen_tokens,
        "context": 512,
        "threads": a.threads,
        "speculative": mode != "off",
        "draft": a.draft if mode == "draft" else None,
        "device": a.device,
    }
    return run_child(args, cold=a.cgroup, memory_limit=limit)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--budgets", default="ram,50", help="ram and/or percentages of the file size")
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="alternated off/on pairs per prompt (medians)")
    ap.add_argument("--cgroup", action="store_true", help="memory limit of budget + baseline + 64 MiB, cold cache")
    ap.add_argument("--draft", default=None, help="also run speculation drafted by this .ellm (same vocabulary)")
    ap.add_argument("--device", default=None, help="device profile whose flash reads emulate (as bench --device)")
    ap.add_argument("--prompts", default=None, help="only prompts whose names contain one of these (comma-separated)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    prompts = {k: v for k, v in PROMPTS.items() if not a.prompts or any(w in k for w in a.prompts.split(","))}
    modes = ["off", "on"] + (["draft"] if a.draft else [])
    rows = []
    for model in a.models:
        size = os.path.getsize(model)
        for b in a.budgets.split(","):
            budget = None if b == "ram" else size * int(b) // 100
            limit = None
            if a.cgroup and budget is not None:
                probe = run_child({"model": model, "budget": budget, "gen_tokens": 2, "prompt_tokens": 2})
                limit = budget + probe.get("baseline_rss", 0) + SLACK if "error" not in probe else None
            for name, prompt in prompts.items():
                # off, on, off, on ...: this VM's speed drifts by several percent between child processes
                runs = [[_run(model, budget, prompt, m, a, limit) for m in modes] for _ in range(a.repeat)]
                failed = [r["error"] for group in runs for r in group if "error" in r]
                if failed:
                    rows.append({"model": model, "budget": b, "prompt": name, "error": failed[0]})
                    print(json.dumps(rows[-1]))
                    continue
                tps = [statistics.median(group[i]["decode_tps"] for group in runs) for i in range(len(modes))]
                off = runs[0][0]
                row = {"model": Path(model).name, "budget": b, "prompt": name, "off_tps": tps[0]}
                for i, m in enumerate(modes[1:], 1):
                    row[f"{m}_tps"], row[f"{m}_ratio"] = tps[i], tps[i] / tps[0] if tps[0] else 0.0
                    row[f"{m}_tokens_per_pass"] = statistics.median(group[i]["tokens_per_pass"] for group in runs)
                row["tokens"] = len(off["tokens"])
                row["identical"] = all(r["tokens"] == off["tokens"] for group in runs for r in group)
                row["streamed_units"] = len(off["streamed"])
                rows.append(row)
                print(json.dumps(rows[-1]))
    head = "".join(f" {m + ' tok/s':>11} {'ratio':>6} {'tok/pass':>8}" for m in modes[1:])
    print(f"\n{'model':<22} {'budget':>6} {'prompt':<22} {'off tok/s':>9}{head} {'tokens':>6} {'same':>5}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<22} {r['budget']:>6} {r['prompt']:<22} error: {r['error']}")
            continue
        cells = "".join(
            f" {r[m + '_tps']:>11.1f} {r[m + '_ratio']:>5.2f}x {r[m + '_tokens_per_pass']:>8.2f}" for m in modes[1:]
        )
        print(
            f"{r['model']:<22} {r['budget']:>6} {r['prompt']:<22} {r['off_tps']:>9.1f}{cells} {r['tokens']:>6} "
            f"{'yes' if r['identical'] else 'NO':>5}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
