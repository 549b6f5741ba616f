#!/usr/bin/env python3
"""Dequantize a GGUF file into a Hugging Face model directory (float weights), so that the Hugging Face path
is tested on the same trained weights as the GGUF path.

    python tools/gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype float32|float16]

Writes config.json, model.safetensors (tensors under Hugging Face names, q/k rows in Hugging Face order),
tokenizer.json, tokenizer_config.json (with the chat template) and generation_config.json, all as edgellm's
GGUF reader sees them (edgellm/converter/gguf.py). The weights are held in RAM while the file is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    a = ap.parse_args()
    from safetensors.numpy import save_file

    from edgellm.converter.gguf import open_gguf
    from edgellm.errors import EdgeLLMError

    try:
        src = open_gguf(Path(a.gguf))
    except EdgeLLMError as e:
        print(f"gguf_to_hf: error: {e}", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in src.tensors.items():
        w = t.read_rows(0, t.rows).reshape(t.shape)
        tensors[name] = np.ascontiguousarray(w.astype(np.float16) if a.dtype == "float16" else w)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = dict(src.config, torch_dtype=a.dtype)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    (out / "tokenizer.json").write_text(src.tokenizer_json, encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(src.tokenizer_config, indent=1), encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(src.generation_config, indent=1))
    print(f"wrote {out}: {len(tensors)} tensors, {sum(v.nbytes for v in tensors.values()) / 1e6:,.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
