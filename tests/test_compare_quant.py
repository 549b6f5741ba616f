"""tools/compare_llamacpp_quant.py without llama.cpp: the F32 GGUF it starts from holds the source's values,
and an .ellm exported to GGUF (q4 -> Q4_0, q8 -> Q8_0) imports back bit for bit, so llama.cpp scores exactly
the weights edgellm stores."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from conftest import make_tiny_model
from gguf_files import write_gguf

import edgellm
from edgellm.format import EllmFile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import compare_llamacpp_quant as tool  # noqa: E402

# 64 columns: q4 group 32 and q8 group 64 (the recipe's head and v_proj) both map onto GGUF blocks
SHAPE = dict(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, inter=128, vocab=96, tied=True)


def _weights(path) -> dict[str, np.ndarray]:
    with EllmFile(path) as f:
        return {n: f.read_tensor(n).dequantize() for n in f.tensors}


def test_f32_gguf_and_export_round_trip(tmp_path):
    hf = make_tiny_model(tmp_path / "hf", **SHAPE)
    src = write_gguf(hf, tmp_path / "src.gguf", lambda n, a: "F32" if a.ndim == 1 else "Q8_0")
    base = tmp_path / "f32.gguf"
    tool.f32_gguf(src, base)
    a = _weights(edgellm.convert(src, tmp_path / "a.ellm", quant="f32", progress=False).path)
    b = _weights(edgellm.convert(base, tmp_path / "b.ellm", quant="f32", progress=False).path)
    assert a.keys() == b.keys() and all(np.array_equal(a[n], b[n]) for n in a)

    ours = edgellm.convert(base, tmp_path / "q4.ellm", quant="q4", progress=False).path
    with EllmFile(ours) as f:
        assert {e.layout.stype for e in f.entries} == {"q4", "q8", "f32"}  # the mixed recipe
    tool.ellm_to_gguf(ours, base, tmp_path / "q4.gguf")
    back = edgellm.convert(tmp_path / "q4.gguf", tmp_path / "back.ellm", quant="auto", progress=False).path
    want, got = _weights(ours), _weights(back)
    assert want.keys() == got.keys() and all(np.array_equal(want[n], got[n]) for n in want)
    with EllmFile(back) as f:  # every matrix kept exactly: the exported blocks are our codes and scales
        assert set(f.header["source"]["exact"]) == set(f.tensors)
