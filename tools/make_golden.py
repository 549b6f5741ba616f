#!/usr/bin/env python3
"""Write the golden .ellm file and its decoded contents: formats/golden/tiny.ellm + tiny.json.

The inputs are fixed here, so running it again must reproduce the committed bytes exactly
(tests/test_golden.py checks that, and that a reader decodes tiny.ellm to tiny.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgellm.format import EllmFile, TensorEntry, Writer
from edgellm.format.spec import layout_for
from edgellm.quant import quantize

CONFIG = {
    "model_type": "llama",
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 5,
    "vocab_size": 3,
}
TOKENIZER = {
    "json": '{"version":"1.0","model":{"type":"WordLevel","vocab":{"<unk>":0,"a":1,"b":2},"unk_token":"<unk>"}}',
    "config": {"bos_token": None},
    "generation_config": {},
}


def tensors() -> list[tuple[str, int, str, str, np.ndarray]]:
    """(name, layer, stype, codec, f32 values): every storage type and codec, odd widths included."""
    ramp = np.linspace(-1.0, 1.0, 3 * 40, dtype=np.float32).reshape(3, 40)
    wave = np.tile(np.array([0.5, -0.25, 0.125, 0.0], np.float32), 33).reshape(4, 33)
    return [
        ("model.embed_tokens.weight", -1, "q4", "raw", ramp),
        ("model.layers.0.input_layernorm.weight", 0, "f32", "zstd", np.ones(64, np.float32)),
        ("model.layers.0.self_attn.q_proj.weight", 0, "q8", "lz4", wave),
        (
            "model.layers.0.mlp.down_proj.weight",
            0,
            "f16",
            "raw",
            np.array([[1.5, -2.0, 0.1, 3.25, -0.5], [0.0, 1.0, -1.0, 2.0, 65504.0]], np.float32),
        ),
        ("model.norm.weight", 1, "f32", "raw", np.arange(8, dtype=np.float32) / 8),
    ]


def write(path: Path) -> None:
    items = tensors()
    entries = [TensorEntry(n, v.shape, layout_for(v.shape, st, 32), layer) for n, layer, st, _c, v in items]
    meta = {
        "format": "ellm",
        "converter": "golden",
        "config": CONFIG,
        "quant": {"type": "q4", "group_size": 32},
        "tokenizer": TOKENIZER,
    }
    with Writer(path, meta, entries, alignment=64, tensor_codecs={n: c for n, _l, _s, c, _v in items}, threads=1) as w:
        for (name, _layer, stype, _codec, v), e in zip(items, entries):
            for stream in quantize(v.reshape(e.layout.rows, e.layout.cols), stype, 32):
                w.feed(name, np.ascontiguousarray(stream))


def decoded(path: Path) -> dict:
    """What a reader must get out of the file: header, and per tensor its raw bytes and values."""
    with EllmFile(path) as f:
        out = {"header": f.header, "tensors": {}}
        for e in f.entries:
            t = f.read_tensor(e.name)
            out["tensors"][e.name] = {
                "codecs": [c.codec for c in e.chunks],
                "raw_hex": t.to_bytes().hex(),
                "values": [float(x) for x in t.dequantize().ravel()],
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "formats" / "golden"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "tiny.ellm")
    (out / "tiny.json").write_text(json.dumps(decoded(out / "tiny.ellm"), indent=1) + "\n")
    print(f"wrote {out / 'tiny.ellm'} ({(out / 'tiny.ellm').stat().st_size} bytes) and tiny.json")


if __name__ == "__main__":
    main()
