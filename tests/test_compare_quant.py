"""tools/compare_llamacpp_quant.py without llama.cpp: the F32 GGUF it starts from holds the source's values,
and an .ellm exported to GGUF (q4 -> Q4_0, q4a -> Q4_1, q8 -> Q8_0) imports back bit for bit, so llama.cpp
scores exactly the weights edgellm stores."""

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


def test_a_q4_1_gguf_imported_and_exported_gives_its_own_blocks_back(tmp_path):
    """--quant auto keeps Q4_1 as q4a; exported again, every tensor's bytes are the source's."""
    import gguf

    hf = make_tiny_model(tmp_path / "hf", **SHAPE)
    src = write_gguf(hf, tmp_path / "src.gguf", lambda n, a: "F32" if a.ndim == 1 else "Q4_1")
    base = tmp_path / "f32.gguf"
    tool.f32_gguf(src, base)
    auto = edgellm.convert(src, tmp_path / "auto.ellm", progress=False).path
    with EllmFile(auto) as f:
        assert {e.layout.stype for e in f.entries} == {"q4a", "f32"}
    tool.ellm_to_gguf(auto, base, tmp_path / "back.gguf")
    want = {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(src).tensors}
    got = {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(tmp_path / "back.gguf").tensors}
    assert want.keys() == got.keys()
    assert all(got[n] == want[n] for n in want), [n for n in want if got[n] != want[n]]
