"""edgellm convert SRC -o OUT.ellm"""

from __future__ import annotations

from pathlib import Path

from ..converter.converter import CODEC_CHOICES
from ..generate.params import check_int
from ..quant import GROUP_SIZES, QUANT_CHOICES
from .options import add_device_argument


def add_arguments(p) -> None:
    p.add_argument(
        "src", help="Hugging Face model directory (config.json, *.safetensors, tokenizer.json) or a .gguf file"
    )
    p.add_argument("-o", "--output", required=True, help="output .ellm file")
    p.add_argument(
        "--quant",
        default=None,
        choices=QUANT_CHOICES,
        help="weight storage type (default: q4 for a directory; auto for GGUF: its own types where ours hold "
        "them exactly, else the smallest that loses less than the source did)",
    )
    p.add_argument(
        "--pure",
        action="store_true",
        help="q4: every matrix in q4 (default: the logits head and the value projections in q8, 20%% more "
        "bytes, ~22%% lower KL on SmolLM2)",
    )
    p.add_argument("--group-size", type=int, default=32, choices=GROUP_SIZES, help="quantization group")
    p.add_argument(
        "--codec",
        default="auto",
        choices=CODEC_CHOICES,
        help="per-chunk codec; auto keeps compression only where it loads faster on --device",
    )
    p.add_argument("--level", type=int, default=3, help="zstd level (1-22)")
    add_device_argument(p, what="device profile the auto codec choice targets", none_means="this host")
    p.add_argument("--threads", type=int, default=2, help="compression threads, >= 1")


def run(args) -> int:
    from .. import convert
    from ..interrupts import finish  # once the output is in place, a Ctrl-C no longer interrupts

    check_int("--threads", args.threads, 1)
    r = convert(
        args.src,
        args.output,
        quant=args.quant,
        group_size=args.group_size,
        codec=args.codec,
        level=args.level,
        device=args.device,
        threads=args.threads,
        pure=args.pure,
        on_commit=finish,
    )
    print(summary(r))
    return 0


def summary(r) -> str:
    """One line; the file's size and the weights' stored chunk bytes are labelled apart (the file also holds the
    header, the tokenizer and alignment padding, which dominate a tiny model)."""
    ratio = r.raw_bytes / max(r.stored_bytes, 1)
    mix = ", ".join(f"{k} {v}" for k, v in sorted(r.codec_mix.items()))
    return (
        f"wrote {r.path}: {r.params / 1e6:,.1f}M params; file {_mb(Path(r.path).stat().st_size)}, of which "
        f"weight chunks {_mb(r.stored_bytes)} stored (compressed {ratio:.3f}x from {_mb(r.raw_bytes)} raw; "
        f"chunks: {mix}); {r.source_bytes / 1e6 / max(r.seconds, 1e-9):,.0f} MB/s of source in {r.seconds:.1f} s"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB" if n < 10e6 else f"{n / 1e6:,.1f} MB"
