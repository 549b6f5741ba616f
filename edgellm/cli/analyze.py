"""edgellm analyze SRC [--quant q4,q8] [--levels 1,3,19] [--device D ...] [--max-tensors N] [--tensors] [--json]"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..errors import EdgeLLMError
from ..generate.params import check_int
from ..source import resolve_model
from .options import device_names


def add_arguments(p) -> None:
    p.add_argument("src", help=".ellm file (studied as stored), .safetensors file, or a model directory of them")
    p.add_argument(
        "--quant",
        default=None,
        help="storage types to quantize a safetensors source to, comma-separated (default: q4,q8)",
    )
    p.add_argument("--levels", default="1,3,19", help="zstd levels to try (1-22), comma-separated")
    p.add_argument(
        "--device",
        action="append",
        default=None,
        help=f"device profile(s) for the load-time prediction, repeatable or comma-separated: "
        f"{device_names()}, or .toml paths (default: every built-in profile)",
    )
    p.add_argument(
        "--max-tensors",
        type=int,
        default=None,
        help="study only the first N 2-D tensors in file order (the rest are counted as left out; default: all)",
    )
    p.add_argument("--tensors", action="store_true", help="also print one line per tensor")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the study as JSON (schema: edgellm/bench/analyze.py). share = (raw - stored) / "
        "(raw - order-0 entropy bound): 1 = reaches the bound, > 1 = beats it through repeats",
    )


def _list(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def _mb(n: float) -> str:
    return f"{n / 1e3:,.1f} KB" if n < 1e6 else f"{n / 1e6:,.2f} MB" if n < 1e9 else f"{n / 1e9:,.3f} GB"


def _t(s: float) -> str:
    """Three significant digits in us, ms or s."""
    v, unit = (s * 1e6, "us") if s < 1e-3 else (s * 1e3, "ms") if s < 1 else (s, "s")
    return f"{v:,.{max(0, 2 - math.floor(math.log10(v))) if v > 0 else 0}f} {unit}"


def _progress(i: int, n: int, name: str) -> None:
    sys.stderr.write(f"\ranalyzing {i + 1}/{n} {name[:60]:<60}")
    sys.stderr.flush()


def run(args) -> int:
    from ..bench.analyze import analyze

    try:
        levels = [int(x) for x in _list(args.levels)]
    except ValueError:
        raise EdgeLLMError(f"--levels {args.levels!r}: give zstd levels as integers, e.g. 1,3,19") from None
    if args.max_tensors is not None:
        check_int("--max-tensors", args.max_tensors, 1)
    src = resolve_model(args.src) if Path(args.src).suffix.lower() == ".gguf" else args.src  # studied as imported
    devices = [d for arg in args.device or [] for d in _list(arg)]
    show = sys.stderr.isatty() and not args.json
    try:
        r = analyze(
            src,
            quants=_list(args.quant) or None,
            levels=levels,
            devices=devices or None,
            max_tensors=args.max_tensors,
            progress=_progress if show else None,
        )
    finally:
        if show:
            sys.stderr.write("\r" + " " * 80 + "\r")
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    _print(r, args.tensors)
    return 0


def _print(r: dict, per_tensor: bool) -> None:
    names = r["variants"]
    reasons: dict[str, int] = {}
    for s in r["skipped"]:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    skipped = ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "none"
    studied = max(len(q["tensors"]) for q in r["quant"].values())
    print(
        f"{r['source']} ({r['kind']}): {studied} tensors studied, skipped {skipped}"
        + (f", {r['limited']} left out by --max-tensors" if r["limited"] else "")
        + f"; {r['chunk_bytes'] >> 10} KiB chunks, decode timed on one core here"
    )
    for stype, q in r["quant"].items():
        t = q["total"]
        group = f" group {q['group']}" if q["group"] else ""
        print(
            f"\n{stype}{group}: {t['weights']:,} weights in {t['tensors']} tensors, raw {_mb(t['raw_bytes'])}"
            f" = {t['bits_per_weight']:.3f} bits/weight, order-0 entropy bound {t['bound_bits_per_weight']:.3f}"
        )
        for k, s in t["streams"].items():
            top = 4 if s["symbol"] == "nibble" else 8
            print(
                f"  {k:<7} H = {s['entropy_bits']:.3f} of {top} bits/{s['symbol']}, {_mb(s['raw_bytes'])} -> "
                f"bound {_mb(s['bound_bytes'])} ({s['raw_bytes'] / max(s['bound_bytes'], 1):.3f}x)"
            )
        cols = list(t["streams"])
        print(
            f"  {'codec':<9}"
            + "".join(f"{k + ' x':>10}" for k in cols)
            + f"{'total x':>10}{'bits/w':>8}{'share':>7}{'decode MB/s':>13}"
        )
        for v in names:
            c = t["codecs"][v]
            share = "-" if c["share"] is None else f"{c['share']:.2f}"
            rate = "-" if c["decode_mb_s"] is None else f"{c['decode_mb_s']:,.0f}"
            print(
                f"  {v:<9}"
                + "".join(f"{t['streams'][k]['codecs'][v]['ratio']:>10.3f}" for k in cols)
                + f"{c['ratio']:>10.3f}{c['bits_per_weight']:>8.3f}{share:>7}{rate:>13}"
            )
        bound_x = (t["streams"][k]["raw_bytes"] / max(t["streams"][k]["bound_bytes"], 1) for k in cols)
        print(
            f"  {'bound':<9}"
            + "".join(f"{x:>10.3f}" for x in bound_x)
            + f"{t['raw_bytes'] / max(t['bound_bytes'], 1):>10.3f}{t['bound_bits_per_weight']:>8.3f}{'1.00':>7}"
        )
        if "file" in t:
            fl = t["file"]
            mix = "; ".join(
                f"{c} {m['chunks']} chunks {_mb(m['raw_bytes'])} -> {_mb(m['stored_bytes'])}"
                for c, m in fl["chunks"].items()
            )
            how = f"codec {fl['mode']}, level {fl['level']}" if fl["mode"] else "codec mode not recorded"
            print(f"  file as stored ({how}): {mix}; {8 * fl['stored_bytes'] / max(t['weights'], 1):.3f} bits/weight")
        if per_tensor:
            print(
                f"\n  {'tensor':<44} {'shape':<12}{'H codes':>8}{'H scales':>9}{'bits/w':>8}{'bound':>7}"
                + "".join(f"{v + ' x':>10}" for v in names[1:])
            )
            for x in q["tensors"]:
                hs = x["streams"].get("scales", {}).get("entropy_bits")
                print(
                    f"  {x['name'][-44:]:<44} {'x'.join(map(str, x['shape'])):<12}"
                    f"{x['streams']['codes']['entropy_bits']:>8.3f}{'-' if hs is None else f'{hs:.3f}':>9}"
                    f"{x['bits_per_weight']:>8.3f}{x['bound_bits_per_weight']:>7.3f}"
                    + "".join(f"{x['codecs'][v]['ratio']:>10.3f}" for v in names[1:])
                )
    for stype in r["quant"]:
        print(
            f"\npredicted load of all studied {stype} weights: stored / read MB/s + raw / (decode MB/s measured "
            f"here x cpu_scale)"
        )
        extra = ["file"] if r["kind"] == "ellm" else []
        print(f"  {'device':<13}{'read MB/s':>10}{'cpu':>6}" + "".join(f"{v:>11}" for v in names + extra))
        for dn, d in r["devices"].items():
            load = d["load"][stype]
            print(
                f"  {dn:<13}{d['read_mb_s']:>10,.0f}{d['cpu_scale']:>6.2f}"
                + "".join(f"{_t(load[v]['seconds']):>11}" for v in names + extra)
            )
    print("\nrecommendation (fastest load; saving vs raw)")
    for dn, per in r["recommendation"].items():
        parts = [
            f"{stype}: {x['codec']} ({_t(x['seconds'])}, -{x['time_saving_pct']:.1f}% time, "
            f"-{x['size_saving_pct']:.1f}% bytes)"
            if x["codec"] != "raw"
            else f"{stype}: raw (no codec loads faster)"
            for stype, x in per.items()
        ]
        print(f"  {dn:<13} " + "; ".join(parts))
