"""edgellm run MODEL -p PROMPT"""

from __future__ import annotations

import sys

from .options import (
    MODEL_HELP,
    add_model_argument,
    add_runtime_arguments,
    add_sampling_arguments,
    sampling_params,
    text,
)


def add_model_arguments(p, model_help: str = MODEL_HELP) -> None:
    """Flags every command that loads a model for generation shares."""
    add_model_argument(p, model_help)
    add_runtime_arguments(p)


def sampling_kwargs(args) -> dict:
    return sampling_params(args).as_kwargs()


def load_model(args, **overrides):
    """The model MODEL names (an .ellm file, or a Hugging Face directory converted once), under the shared flags;
    `overrides`: load() arguments of the commands that have them (run, chat and serve pass --draft)."""
    from .. import load
    from ..generate.params import check_load_args

    # load() checks these too; checking first fails a bad flag before the kernels (numba) are imported
    check_load_args(threads=args.threads, context=args.context, slots=args.slots, ram_budget=args.ram_budget)
    kwargs = dict(
        ram_budget=args.ram_budget,
        threads=args.threads,
        context=args.context,
        device=args.device,
        slots=args.slots,
        direct_io=args.direct_io,
        quant=args.quant,
        cluster=args.cluster,
        node_budget=args.node_budget,
    )
    return load(args.model, **{**kwargs, **overrides})


def format_stats(stats, model) -> str:
    io = stats.io or {}
    plan = getattr(model, "plan", None)
    lines = [
        f"prompt: {stats.prompt_tokens} tokens ({stats.cached_tokens} cached), "
        f"{stats.prompt_tps:.1f} tok/s; time to first token {stats.ttft_seconds * 1e3:.0f} ms",
        f"decode: {stats.generated_tokens} tokens, {stats.decode_tps:.2f} tok/s; {stats.passes} passes, "
        f"{stats.tokens_per_pass:.2f} tokens a pass ({stats.accepted} of {stats.drafted} drafted accepted)",
        f"memory: peak RSS {stats.peak_rss_bytes / 1e6:,.0f} MB"
        + (
            f"; plan {plan.total / 1e6:,.1f} MB of a {plan.budget / 1e6:,.1f} MB budget, "
            f"{len(plan.streamed)} of {len(plan.pinned) + len(plan.streamed)} units streamed"
            if plan
            else ""
        ),
        f"I/O: {stats.bytes_read / 1e6:,.1f} MB read",
    ]
    if io.get("units_loaded"):
        lines[-1] += (
            f", read {io['read_s']:.2f} s, decompress {io['decompress_s']:.2f} s, "
            f"compute {io.get('compute_s', 0.0):.2f} s, waited {io['wait_s']:.2f} s, "
            f"overlap {100 * io['overlap']:.0f}%"
        )
    return "\n".join(lines)


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument(
        "-p",
        "--prompt",
        required=True,
        type=text("--prompt"),
        help="prompt text; '-' reads it from stdin (UTF-8; invalid bytes become U+FFFD, with a note)",
    )
    add_sampling_arguments(p)


def run(args) -> int:
    sampling = sampling_kwargs(args)  # a bad flag fails before the model loads
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    with load_model(args, draft=args.draft) as model:
        last = None
        for chunk in model.stream(prompt, **sampling):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            last = chunk
        sys.stdout.write("\n")
        if args.stats and last is not None:
            print(format_stats(last.stats, model), file=sys.stderr)
    return 0
