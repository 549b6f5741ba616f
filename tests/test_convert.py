"""The Hugging Face converter: every storage type, sources, refusals that leave no file, bounded RSS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_tiny_model
from safetensors.numpy import load_file

import edgellm
from edgellm.errors import ConvertError, UnsupportedModelError
from edgellm.format import EllmFile
from edgellm.quant import error_bound
from edgellm.synthetic import SyntheticConfig, make_checkpoint


def _mixed_q4(name: str) -> str:
    """The default q4 recipe on a tied model: the embedding (also the head) and value projections in q8."""
    return "q8" if name == "model.embed_tokens.weight" or name.endswith("v_proj.weight") else "q4"


def _check_against_source(path, weights, stype, pure=False):
    with EllmFile(path) as f:
        for name, e in f.tensors.items():
            src = weights[name].astype(np.float32).reshape(e.layout.rows, e.layout.cols)
            got = f.read_tensor(name).dequantize()
            st = e.layout.stype
            if st == "f32":
                assert np.array_equal(got, src), name
            else:
                amax = np.abs(src).max()  # bounds are per group; test_quant checks them group by group
                assert np.abs(got - src).max() <= error_bound(st) * amax + 1e-7, name
            want = _mixed_q4(name) if stype == "q4" and not pure else stype
            assert st == (want if src.shape[0] > 1 and len(weights[name].shape) == 2 else "f32"), name
        assert sum(c.raw_length for c in f.tensors[name].chunks) == f.tensors[name].layout.nbytes


@pytest.mark.parametrize("quant", ["f32", "f16", "q8", "q4"])
def test_stories_every_quant(quant, stories_dir, stories_ellm):
    weights = load_file(str(stories_dir / "model.safetensors"))
    _check_against_source(stories_ellm[quant], weights, quant)
    with EllmFile(stories_ellm[quant]) as f:
        assert "lm_head.weight" not in f.tensors  # tied embeddings are stored once
        assert f.tokenizer["json"] and f.config["model_type"] == "llama"


@pytest.mark.parametrize("codec", ["zstd", "lz4", "raw", "auto"])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_codecs_and_groups(codec, group, stories_dir, tmp_path):
    out = edgellm.convert(
        stories_dir, tmp_path / "m.ellm", quant="q4", group_size=group, codec=codec, pure=True, progress=False
    ).path
    _check_against_source(out, load_file(str(stories_dir / "model.safetensors")), "q4", pure=True)
    with EllmFile(out) as f:
        used = {c.codec for e in f.entries for c in e.chunks}
    assert used <= ({codec, "raw"} if codec != "auto" else {"raw", "lz4", "zstd"})


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sharded_half_precision_sources(dtype, tmp_path):
    src = make_checkpoint(tmp_path / "src", "tiny", dtype=dtype, shard_size=60_000)
    assert (src / "model.safetensors.index.json").is_file()
    assert len(list(src.glob("model-*.safetensors"))) > 1
    out = edgellm.convert(src, tmp_path / "m.ellm", quant="f32", progress=False).path
    with EllmFile(out) as f:
        for shard in src.glob("model-*.safetensors"):
            raw = open(shard, "rb").read()
            n = int.from_bytes(raw[:8], "little")
            hdr = json.loads(raw[8 : 8 + n])
            for name, info in hdr.items():
                if name == "__metadata__":
                    continue
                a, b = info["data_offsets"]
                bits = np.frombuffer(raw[8 + n + a : 8 + n + b], np.uint16)
                want = (
                    (bits.astype(np.uint32) << 16).view(np.float32)
                    if dtype == "bfloat16"
                    else bits.view(np.float16).astype(np.float32)
                )
                got = f.read_tensor(name).dequantize().ravel()
                assert np.array_equal(got, want), name


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_other_architectures_convert(arch, tmp_path):
    src = make_tiny_model(tmp_path / "src", model_type=arch, tied=arch == "qwen2")
    out = edgellm.convert(src, tmp_path / "m.ellm", quant="q8", progress=False).path
    with EllmFile(out) as f:
        names = set(f.tensors)
    assert ("model.layers.0.self_attn.q_proj.bias" in names) == (arch == "qwen2")


def _refuse(tmp_path, src, exc, match):
    out = tmp_path / "out.ellm"
    with pytest.raises(exc, match=match):
        edgellm.convert(src, out, progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.ellm")]


def test_refused_inputs(tmp_path):
    good = make_tiny_model(tmp_path / "good")
    _refuse(tmp_path, tmp_path / "missing", ConvertError, "no such file")
    _refuse(tmp_path, good / "config.json", ConvertError, "model directory")
    d = shutil.copytree(good, tmp_path / "noconf")
    (d / "config.json").unlink()
    _refuse(tmp_path, d, ConvertError, "no config.json")
    d = shutil.copytree(good, tmp_path / "gpt2")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    _refuse(tmp_path, d, UnsupportedModelError, "llama, mistral, qwen2")
    d = shutil.copytree(good, tmp_path / "pickle")
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    _refuse(tmp_path, d, ConvertError, "pickle")
    d = shutil.copytree(good, tmp_path / "notok")
    (d / "tokenizer.json").unlink()
    _refuse(tmp_path, d, ConvertError, "tokenizer.json")
    d = shutil.copytree(good, tmp_path / "trunc")
    st = d / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-1000])
    _refuse(tmp_path, d, ConvertError, "invalid data offsets")


def test_refused_tensors(tmp_path):
    from safetensors.numpy import save_file

    good = make_tiny_model(tmp_path / "good")
    w = load_file(str(good / "model.safetensors"))
    for label, change, exc, match in [
        ("shape", lambda t: t.update({"model.norm.weight": np.ones(7, np.float32)}), ConvertError, "shape"),
        (
            "extra",
            lambda t: t.update({"model.layers.0.mystery": np.ones(3, np.float32)}),
            UnsupportedModelError,
            "does not know",
        ),
        ("dtype", lambda t: t.update({"model.norm.weight": np.ones(48, np.int64)}), ConvertError, "dtype I64"),
        ("missing", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), ConvertError, "lacks"),
    ]:
        d = shutil.copytree(good, tmp_path / label)
        t = dict(w)
        change(t)
        save_file(t, str(d / "model.safetensors"))
        _refuse(tmp_path, d, exc, match)


def test_bad_arguments(stories_dir, tmp_path):
    for kw, match in [
        ({"quant": "q3"}, "--quant"),
        ({"group_size": 48}, "--group-size"),
        ({"codec": "brotli"}, "--codec"),
        ({"level": 99}, "--level"),
    ]:
        with pytest.raises(ConvertError, match=match):
            edgellm.convert(stories_dir, tmp_path / "o.ellm", **kw)
    assert not (tmp_path / "o.ellm").exists()


RSS_CHILD = r"""
import sys, threading, time, psutil, edgellm
p = psutil.Process(); base = p.memory_info().rss; peak = [base]; done = []
def watch():
    while not done:
        peak[0] = max(peak[0], p.memory_info().rss); time.sleep(0.005)
threading.Thread(target=watch, daemon=True).start()
edgellm.convert(sys.argv[1], sys.argv[2], quant="q4", codec="zstd", progress=False)
done.append(1); print(peak[0] - base)
"""


def test_conversion_rss_is_bounded(tmp_path):
    cfg = SyntheticConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=6,
        num_attention_heads=16,
        num_key_value_heads=4,
        vocab_size=32000,
        tie_word_embeddings=False,
        rope_theta=1e4,
        max_position_embeddings=512,
    )
    src = make_checkpoint(tmp_path / "src", cfg, dtype="float16")
    size = (src / "model.safetensors").stat().st_size
    assert size > 250e6
    r = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(src), str(tmp_path / "m.ellm")],
        capture_output=True,
        text=True,
        check=True,
    )
    growth = int(r.stdout.strip())
    print(f"source {size / 1e6:.0f} MB, converter RSS growth {growth / 1e6:.0f} MB")
    assert growth < 120e6
    assert os.path.getsize(tmp_path / "m.ellm") < size / 3
