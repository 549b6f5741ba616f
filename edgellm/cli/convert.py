"""edgellm convert SRC -o OUT.ellm"""
from __future__ import annotations

from ..converter.converter import CODEC_CHOICES
from ..quant import GROUP_SIZES, STORAGE_TYPES


def add_arguments(p) -> None:
    p.add_argument("src", help="Hugging Face model directory (config.json, *.safetensors, tokenizer.json)")
    p.add_argument("-o", "--output", required=True, help="output .ellm file")
    p.add_argument("--quant", default="q4", choices=STORAGE_TYPES, help="weight storage type (default q4)")
    p.add_argument("--group-size", type=int, default=32, choices=GROUP_SIZES, help="quantization group")
    p.add_argument("--codec", default="auto", choices=CODEC_CHOICES,
                   help="per-chunk codec; auto keeps compression only where it loads faster on --device")
    p.add_argument("--level", type=int, default=3, help="zstd level (1-22, default 3)")
    p.add_argument("--device", default=None, help="device profile the auto codec choice targets")
    p.add_argument("--threads", type=int, default=2, help="compression threads")


def run(args) -> int:
    from .. import convert
    r = convert(args.src, args.output, quant=args.quant, group_size=args.group_size, codec=args.codec,
                level=args.level, device=args.device, threads=args.threads)
    ratio = r.raw_bytes / max(r.stored_bytes, 1)
    mix = ", ".join(f"{k} {v}" for k, v in sorted(r.codec_mix.items()))
    print(f"wrote {r.path}: {r.params / 1e6:,.1f}M params, {r.stored_bytes / 1e6:,.1f} MB stored "
          f"({ratio:.3f}x of {r.raw_bytes / 1e6:,.1f} MB raw; chunks: {mix}), "
          f"{r.source_bytes / 1e6 / max(r.seconds, 1e-9):,.0f} MB/s of source in {r.seconds:.1f} s")
    return 0
