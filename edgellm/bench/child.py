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

from ..format import EllmFile
from ..runtime.baseline import peak_rss, reset_peak, rss, warm_kernels


def _prompt(model, a: dict, repeat: int) -> list[int]:
    """The chat `messages` in the model's template when given (grounded or open requests), else random ids."""
    if a.get("messages"):
        from ..chat.conversation import encode_chat

        return encode_chat(model.chat_template(None, lambda _: None), model.tokenizer, a["messages"])
    rng = np.random.default_rng(repeat)
    return [int(i) for i in rng.integers(3, model.config.vocab_size, a.get("prompt_tokens", 16))]


def _end_ids(model) -> set:
    from ..chat.conversation import end_of_turn_ids

    return set(end_of_turn_ids(model.tokenizer))


def _one(a: dict, repeat: int) -> dict:
    """Load, prefill a random prompt, decode; timings and I/O split into the prompt and the decode phase."""
    import edgellm

    from ..generate.generate import Stats, generate_tokens
    from ..runtime.device import load_device
    from ..runtime.predict import predict

    t0 = time.perf_counter()
    model = edgellm.load(
        a["model"],
        ram_budget=a.get("budget"),
        device=a.get("device"),
        context=a.get("context"),
        slots=a.get("slots", 2),
        direct_io=a.get("direct_io", True),
        decode_threads=a.get("decode_threads", 1),
        draft=a.get("draft"),
    )
    load_s = time.perf_counter() - t0
    try:
        prov = model.provider
        prompt = _prompt(model, a, repeat)
        read0 = prov.bytes_read
        stats = Stats()
        trace_tokens = a.get("trace_tokens", 0) if repeat == 0 else 0
        token_times, io1, units1, read1, trace = [], None, None, None, None
        steps_of = generate_tokens(
            model.session,
            prompt,
            max_tokens=a.get("gen_tokens", 32),
            speculative=a.get("speculative"),
            draft=model.draft.session if model.draft is not None else None,
            stats=stats,
        )
        tokens: list[int] = []
        ends = _end_ids(model) if a.get("messages") else set()  # a chat reply ends at its end of turn
        for n, (token, _) in enumerate(steps_of):
            token_times.append(time.perf_counter())
            if n == 0:  # the decode phase starts here: snapshot what the prompt cost
                io1, read1 = dict(prov.io_stats()), prov.bytes_read
                units1 = {u: dict(r) for u, r in prov.stats.per_unit.items()}
                if trace_tokens:
                    prov.stats.trace = []
            elif n == trace_tokens:
                trace, prov.stats.trace = prov.stats.trace, None
            if token in ends:
                break
            tokens.append(token)
        if prov.stats.trace is not None:  # fewer tokens than asked to trace
            trace, prov.stats.trace = prov.stats.trace, None
        # gen_tokens >= 1 and generate_tokens yields once per step: the n == 0 snapshot was taken
        assert io1 is not None and units1 is not None
        io = prov.io_stats()
        steps = max(stats.generated_tokens - 1, 1)
        d = {k: io[k] - io1[k] for k in ("read_s", "decompress_s", "wait_s", "compute_s", "bytes_read")}
        io_s = d["read_s"] + d["decompress_s"]
        per_layer = []
        for u in sorted(prov.stats.per_unit):
            r, r1 = prov.stats.per_unit[u], units1.get(u, {})
            per_layer.append(
                {
                    "unit": u,
                    "streamed": u in model.plan.streamed,
                    **{k: (r[k] - r1.get(k, 0.0)) / steps for k in ("read_s", "decompress_s", "wait_s", "compute_s")},
                }
            )
        with EllmFile(a["model"]) as f:
            stype = next(iter(f.weight_types()), "q4")  # the type holding most weight bytes
            weights = sum(e.stored_bytes for e in f.entries)
        dev = load_device(a["device"]) if a.get("device") else None
        plan = model.plan
        out = {
            "budget": plan.budget,
            "plan_total": plan.total,
            "pinned": plan.pinned,
            "streamed": plan.streamed,
            "streamed_bytes_per_token": plan.streamed_bytes_per_pass,
            "load_s": load_s,
            "prompt_tokens": stats.prompt_tokens,
            "prompt_tps": stats.prompt_tps,
            "ttft_s": stats.ttft_seconds,
            "generated_tokens": stats.generated_tokens,
            "decode_tps": stats.decode_tps,
            "passes": stats.passes,
            "drafted": stats.drafted,
            "accepted": stats.accepted,
            "tokens_per_pass": stats.tokens_per_pass,
            "tokens": tokens,
            "bytes_read": prov.bytes_read - read0,
            "prompt_bytes_read": read1 - read0,
            "decode_bytes_per_token": (prov.bytes_read - read1) / steps,
            "read_s": d["read_s"],
            "decompress_s": d["decompress_s"],
            "wait_s": d["wait_s"],
            "compute_s": d["compute_s"],
            "overlap": max(0.0, 1.0 - d["wait_s"] / io_s) if io_s else 1.0,
            "per_layer": per_layer,
            "predicted": predict(plan, dev, stype, weights),
            "stype": stype,
            "peak_rss": peak_rss(),
        }
        if trace is not None:
            base = token_times[0]
            out["trace"] = [[lane, u, t0 - base, t1 - base] for lane, u, t0, t1 in trace]
            out["token_times"] = [t - base for t in token_times[: trace_tokens + 1]]
        return out
    finally:
        model.close()


def main(a: dict) -> dict:
    """Repeats of _one; with `cold`, the page cache is dropped before each (needs root; otherwise only the
    streamed reads are cold, through O_DIRECT). The first repeat's keys stay at the top level."""
    from .. import kernels
    from .runner import drop_caches

    kernels.set_threads(a.get("threads"))
    with EllmFile(a["model"]) as f:
        stypes = list(f.weight_types()) or ["q4"]
    for stype in stypes:  # a GGUF import may mix types: each one's kernels
        warm_kernels(stype)
    reset_peak()
    baseline = rss()
    runs, dropped = [], None
    for r in range(max(1, a.get("repeat", 1))):
        if a.get("cold"):
            dropped = drop_caches()
        runs.append(_one(a, r))
    out = dict(runs[0])
    out.update(
        repeats=[{k: v for k, v in x.items() if k not in ("trace", "token_times", "per_layer")} for x in runs],
        cold=bool(a.get("cold")),
        page_cache_dropped=dropped,
        baseline_rss=baseline,
        peak_rss=peak_rss(),
        rss_over_baseline=peak_rss() - baseline,
    )
    return out


if __name__ == "__main__":
    from ..errors import EdgeLLMError

    try:
        print(json.dumps(main(json.loads(sys.argv[1]))))
    except EdgeLLMError as e:  # a user error (budget too small...): one line for the table
        print(json.dumps({"error": str(e)}))
    except KeyboardInterrupt:  # the parent stops us (runner._stop): the with-blocks have cleaned up
        sys.exit(130)
