#!/usr/bin/env python3
"""Write a synthetic (random-weight) Hugging Face checkpoint at a real model's shapes.

    python tools/make_synthetic.py --preset tinyllama-1.1b --out /tmp/tinyllama [--dtype float16]
        [--seed 0] [--shard-size 1GB] [--tokenizer DIR]

Presets: tinyllama-1.1b, smollm2-360m, demo, tiny. The 32000-vocab presets copy the Llama-2 tokenizer from
../shared/tokenizers/llama2 when it is there; otherwise a small BPE tokenizer is trained in-process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgellm.runtime.plan import parse_size
from edgellm.synthetic import PRESETS, SyntheticConfig, make_checkpoint

LLAMA2_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "tokenizers" / "llama2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-size", default=None, help="e.g. 1GB: write sharded safetensors with an index")
    ap.add_argument("--tokenizer", default=None, help="copy tokenizer files from this directory")
    a = ap.parse_args()
    cfg = SyntheticConfig.preset(a.preset)
    tok = a.tokenizer
    if tok is None and cfg.vocab_size == 32000 and (LLAMA2_TOKENIZER / "tokenizer.json").is_file():
        tok = LLAMA2_TOKENIZER
    t0 = time.perf_counter()
    out = make_checkpoint(
        a.out,
        cfg,
        dtype=a.dtype,
        seed=a.seed,
        tokenizer_dir=tok,
        shard_size=parse_size(a.shard_size) if a.shard_size else None,
    )
    size = sum(p.stat().st_size for p in Path(out).glob("*.safetensors"))
    print(
        f"wrote {out}: {a.preset}, {cfg.params / 1e6:,.1f}M params, {size / 1e6:,.1f} MB {a.dtype}, "
        f"{time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
