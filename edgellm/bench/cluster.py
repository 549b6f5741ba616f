"""edgellm bench --cluster: prefill and decode speed of a model pipelined over stages, and where each stage's
bytes and memory go.

The driver is this process (as it is for `run` and `chat`); the stages run their kernels once before measuring
their baseline RSS, so a stage's peak over its baseline is what its node budget bounds (as bench's children).
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def run_cluster_bench(model: str, *, cluster: str, node_budget, prompt_tokens: int, gen_tokens: int, repeat: int,
                      threads, context, device, speculative, progress) -> dict:  # fmt: skip
    from ..cluster.driver import load_cluster

    ctx = context or prompt_tokens + gen_tokens + 16
    t0 = time.perf_counter()
    m = load_cluster(model, cluster=cluster, node_budget=node_budget, threads=threads, context=ctx, device=device,
                     warm=True)  # fmt: skip
    load_s = time.perf_counter() - t0
    runs = []
    try:
        pipe = m.transformer
        rng = np.random.default_rng(0)
        for r in range(repeat):
            prompt = [int(i) for i in rng.integers(3, m.config.vocab_size, prompt_tokens)]
            m.session.ids.clear()  # every repeat prefills its whole prompt
            with m.stream(prompt, max_tokens=gen_tokens, speculative=speculative) as chunks:
                parts = list(chunks)
            s = parts[-1].stats
            assert s is not None
            runs.append(
                {
                    "prompt_tps": s.prompt_tps,
                    "decode_tps": s.decode_tps,
                    "tokens_per_pass": s.tokens_per_pass,
                    "ttft_s": s.ttft_seconds,
                    "bytes_read": s.bytes_read,  # the stages' reads over the generation (stream_text)
                    "generated_tokens": s.generated_tokens,
                }
            )
            progress(f"repeat {r + 1}/{repeat}: decode {s.decode_tps:.2f} tok/s, prefill {s.prompt_tps:.1f} tok/s")
        stages = [
            {
                "stage": i.index,
                "node": i.node,
                "layers": list(i.layers),
                "budget": i.budget,
                "planned": i.planned,
                "pinned": i.pinned,
                "streamed": i.streamed,
                "streamed_bytes_per_token": p.streamed_bytes_per_pass,
                "rss_over_baseline": i.peak_rss - i.baseline_rss,
            }
            for i, p in zip(pipe.info(), m.plan.plans)
        ]
    finally:
        m.close()
    med = {k: statistics.median(r[k] for r in runs) for k in ("prompt_tps", "decode_tps", "tokens_per_pass")}
    return {
        "model": model,
        "cluster": cluster,
        "load_s": load_s,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "repeat": repeat,
        "runs": runs,
        "median": med,
        "stages": stages,
    }


def format_cluster(result: dict) -> str:
    med = result["median"]
    lines = [
        f"{result['model']} on {result['cluster']}: {result['prompt_tokens']}-token prompt, {result['gen_tokens']} "
        f"generated, {result['repeat']} repeat(s), loaded in {result['load_s']:.1f} s",
        f"decode {med['decode_tps']:.2f} tok/s ({med['tokens_per_pass']:.2f} tokens a pass), "
        f"prefill {med['prompt_tps']:.1f} tok/s (medians)",
        f"{'stage':>5} {'layers':>9} {'budget MB':>10} {'plan MB':>8} {'RSS+ MB':>8} {'pinned':>6} {'streamed':>8} "
        f"{'MB/token':>9}  node",
    ]
    for s in result["stages"]:
        a, b = s["layers"]
        lines.append(
            f"{s['stage']:>5} {f'{a}..{b - 1}':>9} {s['budget'] / 1e6:>10.1f} {s['planned'] / 1e6:>8.1f} "
            f"{s['rss_over_baseline'] / 1e6:>8.1f} {len(s['pinned']):>6} {len(s['streamed']):>8} "
            f"{s['streamed_bytes_per_token'] / 1e6:>9.1f}  {s['node']}"
        )
    return "\n".join(lines)
