"""edgellm bench MODEL [--ram-budget X] [--device D] [--sweep budget=25%,50%] [--sweep codec=raw,zstd] ..."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import EdgeLLMError
from ..generate.params import check_int
from ..runtime.budget import check_budget
from .options import (
    add_budget_argument,
    add_cluster_arguments,
    add_context_argument,
    add_device_argument,
    add_model_argument,
    add_speculative_arguments,
    add_threads_argument,
)


def add_arguments(p) -> None:
    add_model_argument(p)
    add_budget_argument(p)
    add_cluster_arguments(p)
    add_device_argument(p)
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (random token ids), >= 1")
    p.add_argument("--gen-tokens", type=int, default=64, help="tokens to generate, >= 2")
    p.add_argument("--repeat", type=int, default=1, help="repeats per configuration (mean ± sd), >= 1")
    p.add_argument(
        "--cold",
        action="store_true",
        help="drop the page cache before each repeat (root; otherwise only O_DIRECT reads are cold)",
    )
    add_threads_argument(p)
    add_context_argument(p, none_means="prompt + generated tokens + 16")
    p.add_argument(
        "--sweep",
        action="append",
        default=None,
        metavar="KEY=V1,V2",
        help="budget=25%%,50%%,75%%,100%% and/or codec=raw,lz4,zstd (re-encodes a temporary copy); "
        "several --sweep run every combination (default: one configuration)",
    )
    p.add_argument("--layers", action="store_true", help="print per-layer times of every configuration")
    add_speculative_arguments(p)
    p.add_argument("--json", default=None, metavar="FILE", help="write the full result as JSON (default: not written)")
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help="timeline and budget curve, .png or .svg (needs matplotlib; default: no plot)",
    )


def check_run_flags(args) -> None:
    """bench's and demo's run-size flags and output files, checked before anything is built or run."""
    check_int("--prompt-tokens", args.prompt_tokens, 1)
    check_int("--gen-tokens", args.gen_tokens, 2)
    check_int("--repeat", args.repeat, 1)
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:  # demo takes --plot "" as "no plot"
            writable_path(flag, path)


def writable_path(flag: str, path: str) -> None:
    """Fail now, not after minutes of runs, when an output file cannot be written where it is asked for."""
    p = Path(path)
    if p.is_dir():
        raise EdgeLLMError(f"{flag} {path}: is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise EdgeLLMError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise EdgeLLMError(f"{flag} {path}: directory {parent} is not writable")


def fail_if_any_failed(result: dict) -> None:
    """After the table: a configuration that could not run makes the command fail, with one error line."""
    failed = [r for r in result["runs"] if "error" in r]
    if failed:
        raise EdgeLLMError(
            f"{len(failed)} of {len(result['runs'])} configuration(s) could not run (see the table): "
            f"{failed[0]['error']}"
        )


def run(args) -> int:
    from ..bench.bench import parse_sweep, run_bench
    from ..generate.params import check_load_args
    from ..source import resolve_model

    check_run_flags(args)
    check_load_args(threads=args.threads, context=args.context, ram_budget=args.ram_budget)
    if args.cluster is not None or args.node_budget is not None:
        return _cluster(args)
    sweep = parse_sweep(args.sweep)
    for b in sweep.get("budget", []):
        check_budget(b)
    if args.plot:
        from ..bench.plot import _matplotlib

        _matplotlib()  # fail before the runs, not after
    model = resolve_model(args.model, args.quant)
    result = run_bench(
        model,
        ram_budget=args.ram_budget,
        device=args.device,
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        repeat=args.repeat,
        cold=args.cold,
        threads=args.threads,
        context=args.context,
        sweep=sweep,
        speculative=args.speculative,
        draft=resolve_model(args.draft) if args.draft else None,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print_result(result, layers=args.layers)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    if args.plot and any("error" not in r for r in result["runs"]):
        from ..bench.plot import plot

        print(f"plot: {plot(result, args.plot)}")
    fail_if_any_failed(result)
    return 0


def print_result(result: dict, layers: bool = False) -> None:
    from ..bench.bench import format_layers, format_table

    print(
        f"{result['model']} ({result['model_bytes'] / 1e6:,.1f} MB) on {result['device']}: "
        f"{result['prompt_tokens']}-token prompt, {result['gen_tokens']} generated, {result['repeat']} repeat(s)"
        f"{', cold' if result['cold'] else ''}"
    )
    print(format_table(result))
    runs = [r for r in result["runs"] if "error" not in r]
    for r in runs if layers or len(runs) == 1 else []:
        label = " ".join(f"{k}={v}" for k, v in r["config"].items()) or "default"
        print(f"\nper layer, ms per decoded token ({label}):")
        print(format_layers(r))


def _cluster(args) -> int:
    """bench --cluster: one configuration, in this process (the driver) and the stages."""
    from ..bench.cluster import format_cluster, run_cluster_bench
    from ..cluster.driver import check_cluster_args
    from ..errors import InvalidArgumentError
    from ..source import resolve_model

    check_cluster_args(args.cluster, args.node_budget, args.ram_budget, args.draft)
    alone = (("--sweep", args.sweep), ("--cold", args.cold), ("--plot", args.plot), ("--layers", args.layers))
    for flag, given in alone:
        if given:
            raise InvalidArgumentError(f"{flag} is not available with --cluster (one configuration, measured whole)")
    result = run_cluster_bench(
        str(resolve_model(args.model, args.quant)),
        cluster=args.cluster,
        node_budget=args.node_budget,
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        repeat=args.repeat,
        threads=args.threads,
        context=args.context,
        device=args.device,
        speculative=args.speculative,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(format_cluster(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0
