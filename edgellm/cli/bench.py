"""edgellm bench MODEL [--ram-budget X] [--device D] [--sweep budget=25%,50%] [--sweep codec=raw,zstd] ..."""
from __future__ import annotations

import json
import sys


def add_arguments(p) -> None:
    p.add_argument("model", help=".ellm file")
    p.add_argument("--ram-budget", default=None, help="RAM budget: bytes, 300MB, or a share of the file like 50%%")
    p.add_argument("--device", default=None, help="device profile to emulate (see devices/)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (random token ids)")
    p.add_argument("--gen-tokens", type=int, default=64, help="tokens to generate")
    p.add_argument("--repeat", type=int, default=1, help="repeats per configuration (mean ± sd)")
    p.add_argument("--cold", action="store_true",
                   help="drop the page cache before each repeat (root; otherwise only O_DIRECT reads are cold)")
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: physical cores)")
    p.add_argument("--context", type=int, default=None, help="context length (default: prompt + generated)")
    p.add_argument("--sweep", action="append", default=None, metavar="KEY=V1,V2",
                   help="budget=25%%,50%%,75%%,100%% and/or codec=raw,lz4,zstd (re-encodes a temporary copy); "
                        "several --sweep run every combination")
    p.add_argument("--layers", action="store_true", help="print per-layer times of every configuration")
    p.add_argument("--json", default=None, metavar="FILE", help="write the full result as JSON")
    p.add_argument("--plot", default=None, metavar="FILE", help="timeline and budget curve, .png or .svg "
                                                                "(needs matplotlib)")


def run(args) -> int:
    from ..bench.bench import parse_sweep, run_bench
    sweep = parse_sweep(args.sweep)
    if args.plot:
        from ..bench.plot import _matplotlib
        _matplotlib()           # fail before the runs, not after
    result = run_bench(args.model, ram_budget=args.ram_budget, device=args.device,
                       prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens, repeat=args.repeat,
                       cold=args.cold, threads=args.threads, context=args.context, sweep=sweep,
                       progress=lambda m: print(m, file=sys.stderr, flush=True))
    print_result(result, layers=args.layers)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    if args.plot:
        from ..bench.plot import plot
        print(f"plot: {plot(result, args.plot)}")
    return 0 if all("error" not in r for r in result["runs"]) else 1


def print_result(result: dict, layers: bool = False) -> None:
    from ..bench.bench import format_layers, format_table
    print(f"{result['model']} ({result['model_bytes'] / 1e6:,.1f} MB) on {result['device']}: "
          f"{result['prompt_tokens']}-token prompt, {result['gen_tokens']} generated, {result['repeat']} repeat(s)"
          f"{', cold' if result['cold'] else ''}")
    print(format_table(result))
    runs = [r for r in result["runs"] if "error" not in r]
    for r in runs if layers or len(runs) == 1 else []:
        label = " ".join(f"{k}={v}" for k, v in r["config"].items()) or "default"
        print(f"\nper layer, ms per decoded token ({label}):")
        print(format_layers(r))
