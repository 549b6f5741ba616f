"""One benchmark run, in its own process: `python -m edgellm.bench.child JSON_ARGS` prints one JSON line.

It first measures its baseline (interpreter, numpy, numba with every kernel loaded) on a tiny in-memory
warm-up, then loads the model under the budget and generates; peak RSS minus baseline is what the budget
must cover.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import psutil


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _warm_kernels(stype: str) -> None:
    """Run a tiny model of the same storage type through prefill and decode, so every kernel signature the
    real run needs is compiled or loaded from numba's cache now and counts in the baseline, not the budget."""
    import tempfile

    import edgellm
    from ..synthetic import make_checkpoint
    with tempfile.TemporaryDirectory() as d:
        src = make_checkpoint(os.path.join(d, "src"), "tiny", dtype="float16")
        out = edgellm.convert(src, os.path.join(d, "m.ellm"), quant=stype, progress=False).path
        with edgellm.load(out, context=64) as m:
            m.logits([1, 5, 7, 9])
            m.generate([1, 5, 7], max_tokens=3)


def main(a: dict) -> dict:
    import edgellm
    from .. import kernels
    from ..generate.generate import peak_rss_bytes
    kernels.set_threads(a.get("threads"))
    from ..format import EllmFile
    with EllmFile(a["model"]) as f:
        stype = (f.header.get("quant") or {}).get("type", "q4")
    _warm_kernels(stype)
    baseline = _rss()
    t0 = time.perf_counter()
    model = edgellm.load(a["model"], ram_budget=a.get("budget"), device=a.get("device"), context=a.get("context"),
                         slots=a.get("slots", 2), direct_io=a.get("direct_io", True),
                         decode_threads=a.get("decode_threads", 1))
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
