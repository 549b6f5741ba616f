"""edgellm run MODEL -p PROMPT"""
from __future__ import annotations

import argparse
import sys


def add_model_arguments(p, model_help: str = ".ellm file") -> None:
    """Flags every command that loads a model shares."""
    p.add_argument("model", help=model_help)
    p.add_argument("--ram-budget", default=None, help="RAM budget, e.g. 300MB or 1.5GiB (default: half the "
                                                      "available memory)")
    p.add_argument("--device", default=None, help="device profile to emulate (see devices/)")
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: physical cores)")
    p.add_argument("--context", type=int, default=None, help="context length in tokens (default: min(model, 2048))")
    p.add_argument("--slots", type=int, default=2, help="stream slots for layers that do not fit")
    p.add_argument("--direct-io", action=argparse.BooleanOptionalAction, default=True,
                   help="read streamed layers with O_DIRECT (default) or buffered reads + fadvise(DONTNEED)")


def add_sampling_arguments(p, temp: float = 0.0, top_p: float = 1.0) -> None:
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate")
    p.add_argument("--temp", type=float, default=temp, help=f"sampling temperature (default {temp}: "
                   f"{'greedy' if temp == 0 else 'sampled'})")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=top_p, help=f"nucleus sampling mass (default {top_p})")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x the top probability")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty (1.0: off)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--stats", action="store_true", help="print speed, memory and I/O statistics to stderr")


def sampling_kwargs(args) -> dict:
    return dict(max_tokens=args.max_tokens, temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
                min_p=args.min_p, repetition_penalty=args.repeat_penalty, seed=args.seed, stop=args.stop)


def load_model(args):
    from .. import load
    return load(args.model, ram_budget=args.ram_budget, threads=args.threads, context=args.context,
                device=args.device, slots=args.slots, direct_io=args.direct_io)


def format_stats(stats, model) -> str:
    io = stats.io or {}
    plan = getattr(model, "plan", None)
    lines = [f"prompt: {stats.prompt_tokens} tokens ({stats.cached_tokens} cached), "
             f"{stats.prompt_tps:.1f} tok/s; time to first token {stats.ttft_seconds * 1e3:.0f} ms",
             f"decode: {stats.generated_tokens} tokens, {stats.decode_tps:.2f} tok/s",
             f"memory: peak RSS {stats.peak_rss_bytes / 1e6:,.0f} MB" +
             (f"; plan {plan.total / 1e6:,.1f} MB of a {plan.budget / 1e6:,.1f} MB budget, "
              f"{len(plan.streamed)} of {len(plan.pinned) + len(plan.streamed)} units streamed" if plan else ""),
             f"I/O: {stats.bytes_read / 1e6:,.1f} MB read"]
    if io.get("units_loaded"):
        lines[-1] += (f", read {io['read_s']:.2f} s, decompress {io['decode_s']:.2f} s, "
                      f"compute {io.get('compute_s', 0.0):.2f} s, waited {io['wait_s']:.2f} s, "
                      f"overlap {100 * io['overlap']:.0f}%")
    return "\n".join(lines)


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text ('-' reads stdin)")
    add_sampling_arguments(p)


def run(args) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    with load_model(args) as model:
        last = None
        for chunk in model.stream(prompt, **sampling_kwargs(args)):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            last = chunk
        sys.stdout.write("\n")
        if args.stats and last is not None:
            print(format_stats(last.stats, model), file=sys.stderr)
    return 0
