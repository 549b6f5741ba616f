"""edgellm analyze: entropy, nibble unpacking, the study on safetensors and .ellm sources, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from edgellm.bench.analyze import analyze
from edgellm.bench.streams import entropy_bits, symbol_counts, unpack_q4
from edgellm.cli.main import main
from edgellm.errors import EdgeLLMError
from edgellm.quant import QTensor, quantize
from edgellm.runtime.device import list_devices

GOLDEN = Path(__file__).resolve().parents[1] / "formats" / "golden" / "tiny.ellm"


def test_entropy_known_distributions():
    assert entropy_bits(np.full(16, 10)) == pytest.approx(4.0)
    assert entropy_bits([0, 0, 7, 0]) == 0.0
    assert entropy_bits([5, 5]) == pytest.approx(1.0)
    assert entropy_bits(np.zeros(256)) == 0.0
    # through the histograms: every nibble value equally often, or a single byte value
    assert entropy_bits(symbol_counts(np.arange(256, dtype=np.uint8)[None], nibbles=True)) == pytest.approx(4.0)
    assert entropy_bits(symbol_counts(np.full((4, 16), 0x77, np.uint8), nibbles=True)) == 0.0
    assert entropy_bits(symbol_counts(np.arange(256, dtype=np.uint8)[None], nibbles=False)) == pytest.approx(8.0)


def test_unpack_q4():
    # group 2: one byte per group, low nibble first
    assert unpack_q4(np.array([[0x21, 0xF0]], np.uint8), group=2).tolist() == [[1, 2, 0, 15]]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 70)).astype(np.float32)
    qt = QTensor.quantize(w, "q4")
    nib = unpack_q4(qt.codes, qt.layout.group)
    assert nib.shape == (8, qt.layout.padded_cols) and nib.max() <= 15
    scales = np.repeat(qt.scales.astype(np.float32), qt.layout.group, axis=1)
    np.testing.assert_allclose(((nib.astype(np.float32) - 8) * scales)[:, :70], qt.dequantize(), rtol=0, atol=0)
    counts = symbol_counts(qt.codes, nibbles=True)
    assert counts.sum() == nib.size
    np.testing.assert_array_equal(counts, np.bincount(nib.ravel(), minlength=16))


@pytest.fixture
def synthetic(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "model.safetensors"
    save_file(
        {
            "a.weight": rng.standard_normal((256, 512)).astype(np.float32),
            "b.weight": (0.02 * rng.standard_normal((256, 512))).astype(np.float32),
            "norm.weight": np.ones(512, np.float32),
            "ids": np.arange(4, dtype=np.int64),
        },
        str(path),
    )
    return path


def test_analyze_safetensors(synthetic):
    r = analyze(synthetic)
    assert {"source", "quant", "devices", "recommendation", "skipped", "limited", "variants"} <= set(r)
    assert set(r["quant"]) == {"q4", "q8"}
    assert {s["name"]: s["reason"] for s in r["skipped"]} == {"norm.weight": "1-D", "ids": "dtype I64"}
    assert r["variants"] == ["raw", "lz4", "zstd-1", "zstd-3", "zstd-19"]
    for stype, top in (("q4", 4.0), ("q8", 8.0)):
        q = r["quant"][stype]
        assert [t["name"] for t in q["tensors"]] == ["a.weight", "b.weight"]
        tot = q["total"]
        assert tot["tensors"] == 2 and tot["weights"] == 2 * 256 * 512
        codes = tot["streams"]["codes"]
        assert codes["symbol"] == ("nibble" if stype == "q4" else "byte")
        assert 0 < codes["entropy_bits"] < top
        assert codes["raw_bytes"] == 2 * quantize(np.zeros((256, 512)), stype)[0].nbytes
        assert tot["raw_bytes"] == codes["raw_bytes"] + tot["streams"]["scales"]["raw_bytes"]
        assert tot["bits_per_weight"] == pytest.approx(4.5 if stype == "q4" else 8.5)
        for v in r["variants"]:
            c = tot["codecs"][v]
            assert c["ratio"] >= 1 and c["stored_bytes"] <= tot["raw_bytes"]
            assert c["decode_mb_s"] > 0
            assert c["share"] is None or c["share"] >= 0
        assert tot["codecs"]["zstd-3"]["ratio"] > 1  # f16 scales always compress
    assert set(r["recommendation"]) == set(r["devices"]) == set(list_devices())
    for per in r["recommendation"].values():
        assert set(per) == {"q4", "q8"}
        for rec in per.values():
            assert rec["codec"] in r["variants"] and rec["seconds"] <= rec["raw_seconds"]
    json.dumps(r)


def test_analyze_limits_and_options(synthetic):
    r = analyze(synthetic, quants=["q4"], levels=[3], devices=["rpi5-sdcard"], max_tensors=1)
    assert r["limited"] == 1 and list(r["quant"]) == ["q4"]
    assert [t["name"] for t in r["quant"]["q4"]["tensors"]] == ["a.weight"]
    assert list(r["devices"]) == ["rpi5-sdcard"] and r["variants"] == ["raw", "lz4", "zstd-3"]
    with pytest.raises(EdgeLLMError):
        analyze(synthetic, quants=["q3"])
    with pytest.raises(EdgeLLMError):
        analyze(synthetic, levels=[30])


def test_analyze_golden_ellm():
    r = analyze(GOLDEN, levels=[3], devices=["host"])
    assert r["kind"] == "ellm"
    assert set(r["quant"]) == {"q4", "q8", "f16"}  # each matrix studied in its stored type
    assert {s["name"] for s in r["skipped"]} == {"model.layers.0.input_layernorm.weight", "model.norm.weight"}
    q8 = r["quant"]["q8"]["total"]
    assert q8["file"]["chunks"] == {"lz4": {"chunks": 2, "raw_bytes": 272, "stored_bytes": 64}}
    assert "file" in r["devices"]["host"]["load"]["q8"]
    assert "scales" not in r["quant"]["f16"]["total"]["streams"]


def test_study_matches_the_writer(tiny_model, tmp_path):
    """A zstd-3 file written in 256 KiB chunks stores exactly what the study predicts for zstd-3."""
    import edgellm

    path = edgellm.convert(tiny_model(), tmp_path / "m.ellm", quant="q8", codec="zstd", level=3, progress=False).path
    r = analyze(path, levels=[3], devices=["host"])
    for t in r["quant"]["q8"]["tensors"]:
        if t["name"] != "model.embed_tokens.weight":  # the writer chunks the embedding at 64 KiB
            assert t["codecs"]["zstd-3"]["stored_bytes"] == t["file"]["stored_bytes"], t["name"]


def test_analyze_stories_ellm(stories_ellm):
    from edgellm.format import EllmFile

    r = analyze(stories_ellm["q4"], levels=[1], devices=["rpi5-sdcard"])
    with EllmFile(stories_ellm["q4"]) as f:
        mats = [e for e in f.entries if e.layout.stype == "q4"]  # the q4 recipe keeps a few matrices in q8
    tot = r["quant"]["q4"]["total"]
    assert tot["tensors"] == len(mats)
    assert tot["raw_bytes"] == sum(e.raw_bytes for e in mats)
    assert tot["file"]["stored_bytes"] == sum(e.stored_bytes for e in mats)
    assert 3 < tot["streams"]["codes"]["entropy_bits"] < 4
    assert r["recommendation"]["rpi5-sdcard"]["q4"]["codec"] in r["variants"]


def test_cli(synthetic, capsys):
    assert main(["analyze", "missing.safetensors"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.safetensors" in err
    assert (
        main(["analyze", str(synthetic), "--quant", "q4", "--levels", "1", "--device", "host,rpi4-sdcard", "--json"])
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert list(r["devices"]) == ["host", "rpi4-sdcard"] and list(r["quant"]) == ["q4"]
    assert (
        main(["analyze", str(synthetic), "--quant", "q8", "--levels", "1", "--device", "rpi5-nvme", "--tensors"]) == 0
    )
    out = capsys.readouterr().out
    assert "a.weight" in out and "recommendation" in out and "rpi5-nvme" in out
    assert main(["analyze", str(GOLDEN), "--quant", "q4"]) == 1
    assert "studied as stored" in capsys.readouterr().err
