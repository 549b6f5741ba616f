"""One benchmark run, in its own process: `python -m edgellm.bench.child JSON_ARGS` prints one JSON line.

It first measures its baseline (interpreter, numpy, numba with every kernel loaded) on a tiny in-memory
warm-up, then loads the model under the budget and generates; peak RSS minus baseline is what the budget
must cover.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import psutil


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _warm_kernels() -> None:
    """Load every kernel from numba's cache so their code counts in the baseline, not in the budget."""
    from .. import kernels
    from ..quant import QTensor
    ws = kernels.Workspace(max_rows=2, max_cols=64, n_heads=2, context=4)
    x = np.ones((2, 64), np.float32)
    for st in ("q4", "q8", "f16", "f32"):
        w = QTensor.quantize(np.ones((8, 64), np.float32), st)
        kernels.matvec(w, x[0], np.zeros(8, np.float32), ws)
        kernels.matmul(w, x, np.zeros((2, 8), np.float32), ws)
    kernels.rmsnorm(x, x[0], 1e-5, np.zeros_like(x))
    kernels.silu_mul(x, x, np.zeros_like(x))
    cos, sin = kernels.rope_tables(8, 4, 10000.0, None)
    q = np.ones((2, 2, 8), np.float32)
    kernels.apply_rope(q, np.arange(2), cos, sin)
    kernels.attention(q, np.ones((4, 1, 8), np.float32), np.ones((4, 1, 8), np.float32), 0, np.zeros_like(q), ws)


def main(a: dict) -> dict:
    import edgellm
    from .. import kernels
    from ..generate.generate import peak_rss_bytes
    kernels.set_threads(a.get("threads"))
    _warm_kernels()
    baseline = _rss()
    t0 = time.perf_counter()
    model = edgellm.load(a["model"], ram_budget=a.get("budget"), device=a.get("device"), context=a.get("context"),
                         slots=a.get("slots", 2), direct_io=a.get("direct_io", False))
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    prompt = [int(i) for i in rng.integers(3, model.config.vocab_size, a.get("prompt_tokens", 16))]
    read0 = model.provider.bytes_read
    io0 = dict(model.provider.io_stats())
    last = None
    for chunk in model._stream_ids(prompt, max_tokens=a.get("gen_tokens", 32), temperature=0.0):
        last = chunk
    st = last.stats
    io = model.provider.io_stats()
    plan = model.plan
    out = {
        "budget": plan.budget, "plan_total": plan.total, "pinned": plan.pinned, "streamed": plan.streamed,
        "streamed_bytes_per_token": plan.streamed_bytes_per_pass, "load_s": load_s,
        "prompt_tokens": st.prompt_tokens, "prompt_tps": st.prompt_tps, "ttft_s": st.ttft_seconds,
        "generated_tokens": st.generated_tokens, "decode_tps": st.decode_tps,
        "bytes_read": model.provider.bytes_read - read0,
        "read_s": io["read_s"] - io0["read_s"], "decode_s": io["decode_s"] - io0["decode_s"],
        "wait_s": io["wait_s"] - io0["wait_s"], "overlap": io["overlap"],
        "baseline_rss": baseline, "peak_rss": peak_rss_bytes(), "rss_over_baseline": peak_rss_bytes() - baseline,
    }
    model.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
