#!/usr/bin/env python3
"""Compute benchmark (issue: inference core): a model held entirely in RAM, so only the kernels count.

    python tools/bench_kernels.py MODEL.ellm [MODEL2.ellm ...] [--prompt-tokens 128] [--gen-tokens 32]
        [--threads 2] [--repeat 3] [--json out.json]

Per model: prefill tok/s for a prompt of random token ids, decode tok/s over generated tokens (greedy), and the
effective weight bandwidth (stored weight bytes touched per decoded token x tok/s). Also the decode matvec
alone on the model's largest layer matrix (GB/s of stored bytes), and the machine's memory read bandwidth
measured in the same run, so the kernel figures can be read against what the memory allows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def memory_read_gb_s(nbytes: int = 1 << 30) -> float:
    """Best of 3 multi-threaded reads of a buffer far larger than the caches: an int64 sum, which LLVM
    vectorizes with independent lanes (a float32 sum with 64 fixed chunks measured 8-12 GB/s here against
    23 GB/s for this one: it was timing its own loop, not the memory)."""
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def _sum(a):
        s = 0
        for i in prange(a.shape[0]):
            s += a[i]
        return s

    a = np.ones(nbytes // 8, np.int64)
    _sum(a)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        _sum(a)
        best = max(best, a.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def matvec_gb_s(model) -> tuple[str, float]:
    from edgellm.kernels import matvec

    f = model.file
    name = max(
        (e for e in f.entries if ".layers.0." in e.name and e.layout.rows > 1), key=lambda e: e.layout.nbytes
    ).name
    w = f.read_tensor(name)
    x = np.random.default_rng(0).standard_normal(w.layout.cols).astype(np.float32)
    out = np.zeros(w.layout.rows, np.float32)
    matvec(w, x, out, model.state.scratch)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            matvec(w, x, out, model.state.scratch)
        best = min(best, (time.perf_counter() - t) / 20)
    return name, w.layout.nbytes / best / 1e9


def bench(path: str, prompt_tokens: int, gen_tokens: int, threads: int, repeat: int) -> dict:
    import edgellm

    with edgellm.load(path, ram_budget=1 << 40, threads=threads, context=prompt_tokens + gen_tokens + 8) as m:
        rng = np.random.default_rng(1)
        prompt = rng.integers(3, m.config.vocab_size, prompt_tokens).tolist()
        # compile / load kernels outside the timing: the prompt's own path (a long prompt's prefill kernels
        # are not decode's) and decode's
        list(m.stream(prompt, max_tokens=2, speculative=False))
        pre, dec = [], []
        for _ in range(repeat):
            m.session.ids = []  # no prefix reuse between repeats
            last = list(m.stream(prompt, max_tokens=gen_tokens, speculative=False))[-1]  # one token a pass
            pre.append(last.stats.prompt_tps)
            dec.append(last.stats.decode_tps)
        weights = sum(
            e.layout.nbytes for e in m.file.entries if "embed_tokens" not in e.name or m.config.tie_word_embeddings
        )
        mv_name, mv = matvec_gb_s(m)
        stype = (m.file.header.get("quant") or {}).get("type")
    d = statistics.median(dec)
    return {
        "model": path,
        "stype": stype,
        "threads": threads,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "prefill_tps": statistics.median(pre),
        "decode_tps": d,
        "decode_tps_all": dec,
        "prefill_tps_all": pre,
        "weight_bytes_per_token": weights,
        "effective_gb_s": weights * d / 1e9,
        "matvec": mv_name,
        "matvec_gb_s": mv,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = [bench(p, a.prompt_tokens, a.gen_tokens, a.threads, a.repeat) for p in a.models]
    mem = memory_read_gb_s()
    print(f"memory read bandwidth here: {mem:.1f} GB/s ({a.threads} threads)")
    print(
        f"{'model':<28} {'type':<4} {'prefill tok/s':>13} {'decode tok/s':>12} {'weights GB/s':>12} {'matvec GB/s':>11}"
    )
    for r in rows:
        print(
            f"{r['model'][-28:]:<28} {r['stype']:<4} {r['prefill_tps']:>13.1f} {r['decode_tps']:>12.2f} "
            f"{r['effective_gb_s']:>12.2f} {r['matvec_gb_s']:>11.2f}"
        )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"memory_gb_s": mem, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
