"""GGUF import: names, the q/k permutation, exact repacking of Q8_0 / Q4_0, --quant auto, hostile files, and
the real SmolLM2 chat model from ../shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, make_tiny_model
from gguf_files import write_gguf

import edgellm
from edgellm.errors import ConvertError, UnsupportedModelError
from edgellm.format import EllmFile

gguf = pytest.importorskip("gguf")
SMOL = SHARED / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SHAPE = dict(hidden=64, heads=4, kv_heads=2, head_dim=16, inter=96, vocab=64)  # block types need cols % 32


def _logits(path, ids) -> np.ndarray:
    with EllmFile(path) as f:
        vocab = f.config["vocab_size"]
    with edgellm.load(path, threads=1) as m:
        out = np.zeros((len(ids), vocab), np.float32)
        m.session.prefill(ids, all_logits=out)
        return out


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("gguf") / "hf", **SHAPE)


def _convert(src, out, **kw):
    return edgellm.convert(src, out, progress=False, **kw).path


def test_f32_gguf_imports_to_the_checkpoint_it_came_from(hf, tmp_path):
    """Every name mapped and the q/k permutation undone: bit-identical logits to the Hugging Face path."""
    g = write_gguf(hf, tmp_path / "m.gguf", lambda n, a: "F32")
    ids = [1, 5, 9, 17, 33, 60, 4, 8]
    want = _logits(_convert(hf, tmp_path / "hf.ellm", quant="f32"), ids)
    got = _logits(_convert(g, tmp_path / "g.ellm", quant="f32"), ids)
    assert np.array_equal(got, want)


def test_gguf_to_hf_writes_the_same_model_as_a_directory(mixed, tmp_path):
    tool = Path(__file__).resolve().parents[1] / "tools" / "gguf_to_hf.py"
    r = subprocess.run([sys.executable, tool, mixed, tmp_path / "hf"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ids = [1, 2, 30, 40, 50, 9]
    want = _logits(_convert(mixed, tmp_path / "g.ellm", quant="f32"), ids)
    assert np.array_equal(_logits(_convert(tmp_path / "hf", tmp_path / "h.ellm", quant="f32"), ids), want)


def _types(name: str, a: np.ndarray) -> str:
    if a.ndim == 1:
        return "F32"
    if "embed" in name or "lm_head" in name or "q_proj" in name:
        return "Q8_0"
    if "mlp.up" in name:
        return "Q4_1"
    if "v_proj" in name:
        return "F16"
    return "Q4_0"


@pytest.fixture(scope="module")
def mixed(hf, tmp_path_factory):
    return write_gguf(hf, tmp_path_factory.mktemp("mixed") / "mixed.gguf", _types)


def _gguf_values(path) -> dict[str, np.ndarray]:
    """Each tensor as the gguf package dequantizes it, q/k rows put back in Hugging Face order."""
    from edgellm.converter.gguf import open_gguf

    src = open_gguf(path)
    return {name: t.read_rows(0, t.rows) for name, t in src.tensors.items()}


def test_auto_keeps_q8_0_q4_0_q4_1_f16_f32_exactly(mixed, tmp_path):
    out = _convert(mixed, tmp_path / "auto.ellm")  # auto is the GGUF default
    values = _gguf_values(mixed)
    with EllmFile(out) as f:
        src = f.header["source"]
        for e in f.entries:
            kind = src["types"][e.name]
            want = {"F32": "f32", "F16": "f16", "Q8_0": "q8", "Q4_0": "q4", "Q4_1": "q4a"}[kind]
            assert (e.layout.stype, e.layout.group) == (want, 32 if want in ("q8", "q4", "q4a") else 0), e.name
            assert e.name in src["exact"], e.name
            got = f.read_tensor(e.name).dequantize().reshape(values[e.name].shape)
            assert np.array_equal(got, values[e.name]), e.name
        assert {"Q4_1", "Q4_0", "Q8_0", "F16", "F32"} <= set(src["types"].values())


def test_auto_at_a_wider_group_requantizes_the_block_types_but_keeps_q4_1(mixed, tmp_path):
    """--group-size 64 cannot hold Q8_0 / Q4_0 blocks of 32 exactly; q4a has group 32 only, so Q4_1 stays."""
    out = _convert(mixed, tmp_path / "auto64.ellm", group_size=64)
    with EllmFile(out) as f:
        src = f.header["source"]
        for e in f.entries:
            kind = src["types"][e.name]
            if kind in ("Q8_0", "Q4_0"):
                assert e.layout.group == 64 and e.name not in src["exact"], e.name
            elif kind == "Q4_1":
                assert (e.layout.stype, e.layout.group) == ("q4a", 32) and e.name in src["exact"], e.name


def test_quant_q4_requantizes_all_but_q4_0(mixed, tmp_path):
    out = _convert(mixed, tmp_path / "q4.ellm", quant="q4", pure=True)
    values = _gguf_values(mixed)
    with EllmFile(out) as f:
        src = f.header["source"]
        for e in f.entries:
            if len(e.shape) == 1:
                continue
            assert e.layout.stype == "q4"
            exact = np.array_equal(f.read_tensor(e.name).dequantize().reshape(values[e.name].shape), values[e.name])
            assert (e.name in src["exact"]) == (src["types"][e.name] == "Q4_0") == exact, e.name


def test_auto_import_runs_close_to_the_f32_import(mixed, tmp_path):
    ids = [1, 7, 3, 22, 41, 9, 63, 12]
    ref = _logits(_convert(mixed, tmp_path / "f32.ellm", quant="f32"), ids)
    got = _logits(_convert(mixed, tmp_path / "auto.ellm"), ids)
    # the decode kernels quantize activations to int8 per group: small, bounded differences
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.75


def test_hostile_gguf_files_are_refused_in_one_error(mixed, hf, tmp_path):
    data = mixed.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ConvertError):
        _convert(cut, tmp_path / "o.ellm")
    assert not (tmp_path / "o.ellm").exists()
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ConvertError, match="not a readable GGUF"):
        _convert(junk, tmp_path / "o.ellm")
    other = write_gguf(hf, tmp_path / "gpt2.gguf", lambda n, a: "F32", arch="gpt2")
    with pytest.raises(UnsupportedModelError, match="'gpt2'"):
        _convert(other, tmp_path / "o.ellm")
    with pytest.raises(ConvertError, match="auto"):
        _convert(hf, tmp_path / "o.ellm", quant="auto")  # auto is for GGUF sources
    for key in ("block_count", "embedding_length"):
        worded = write_gguf(hf, tmp_path / f"{key}.gguf", lambda n, a: "F32", strings={key: "two"})
        with pytest.raises(ConvertError, match=f"llama.{key}' = 'two' is not a valid int"):
            _convert(worded, tmp_path / "o.ellm")


def test_flipped_bytes_in_a_gguf_give_an_edgellm_error_or_a_model(mixed, tmp_path):
    """Random corruption of the header, metadata and tensor table: only EdgeLLMError escapes, never another."""
    import random

    from edgellm.errors import EdgeLLMError

    data, rng = mixed.read_bytes(), random.Random(7)
    for trial in range(60):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(0, 4000)] = rng.randrange(256)
        p = tmp_path / "f.gguf"
        p.write_bytes(bytes(b))
        try:
            _convert(p, tmp_path / f"o{trial}.ellm")
        except EdgeLLMError:
            assert not (tmp_path / f"o{trial}.ellm").exists()


def test_every_model_command_takes_a_gguf(mixed, tmp_path):
    env = {"EDGELLM_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "edgellm.cli.main"]
    r = subprocess.run([*cmd, "run", mixed, "-p", "!#", "--max-tokens", "3"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "converting" in r.stderr and "auto" in r.stderr
    r2 = subprocess.run([*cmd, "inspect", mixed], capture_output=True, text=True, env=env)
    assert r2.returncode == 0, r2.stderr
    assert "converting" not in r2.stderr  # the cached import is reused
    assert "Q4_1" in r2.stdout and "exact" in r2.stdout


# -- the real chat model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    if not SMOL.is_file():
        pytest.skip("SmolLM2 GGUF is not present in ../shared")
    d = tmp_path_factory.mktemp("smol")
    return {q: _convert(SMOL, d / f"{q}.ellm", quant=q) for q in ("auto", "f32")}


def test_smollm2_answers_paris_greedy(smol):
    with edgellm.load(smol["auto"]) as m:
        reply = m.chat([{"role": "user", "content": "Name the capital of France."}], max_tokens=24, temperature=0)
    assert "Paris" in reply


def test_smollm2_speculation_changes_no_token_and_takes_fewer_passes(smol):
    """A grounded request (quote the text back): prompt lookup drafts from the prompt, the reply is token for
    token the plain one, in fewer passes; streamed at a budget under the file's size too."""
    text = "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times."
    msgs = [{"role": "user", "content": f"Repeat this text exactly: {text}"}]
    size = smol["auto"].stat().st_size
    for budget in (None, int(size * 0.6)):
        with edgellm.load(smol["auto"], ram_budget=budget, context=256) as m:
            runs = {}
            for spec in (False, True):
                chunks = list(m.chat(msgs, max_tokens=40, temperature=0, stream=True, speculative=spec))
                runs[spec] = ([c.token for c in chunks], chunks[-1].stats)
            if budget:
                assert m.plan.streamed
        assert runs[True][0] == runs[False][0]
        assert runs[True][1].passes < runs[False][1].passes and runs[True][1].accepted > 0


def test_smollm2_auto_import_keeps_every_tensor_exactly_and_agrees_with_f32(smol):
    with EllmFile(smol["auto"]) as f:
        src = f.header["source"]
        assert src["types"]["model.embed_tokens.weight"] == "Q8_0"
        assert src["exact"] == [e.name for e in f.entries]  # Q8_0 as q8, Q4_1 as q4a, F32 as f32
        assert f.tensors["model.embed_tokens.weight"].layout.stype == "q8"
        assert f.tensors["model.layers.0.mlp.up_proj.weight"].layout.stype == "q4a"
        assert json.dumps(f.config)  # a plain config
        assert f.config["tie_word_embeddings"] is True and f.config["num_key_value_heads"] == 3
    text = (SMOL.parent / "LICENSE").read_text() if (SMOL.parent / "LICENSE").is_file() else ""
    with edgellm.load(smol["f32"]) as m:
        ids = m.tokenizer.encode("The quick brown fox jumps over the lazy dog. Once upon a time, there was " + text)
    ids = ids[:160]
    ref, got = _logits(smol["f32"], ids), _logits(smol["auto"], ids)
    p, q = _softmax(ref), _softmax(got)
    kl = (p * (np.log(p + 1e-30) - np.log(q + 1e-30))).sum(1)
    # the same weights; only the integer kernels' int8 activations differ (over the whole LICENSE: KL 0.0047,
    # top-1 95.8%; llama.cpp's own int8 activations on these weights: KL 0.0033)
    assert kl.mean() < 0.01
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_smollm2_f32_import_equals_transformers_gguf_loader(smol):
    """Logits of fixed ids against transformers' own GGUF loader (tools/make_gguf_logits_reference.py)."""
    ref_dir = Path(__file__).parent / "data" / "reference" / "smollm2-gguf"
    ids = json.loads((ref_dir / "input_ids.json").read_text())["ids"]
    ref = np.load(ref_dir / "logits.npz")
    got = _logits(smol["f32"], ids)
    stride = int(ref["stride"])
    assert np.abs(got[:, ::stride] - ref["strided"]).max() < 5e-4
    assert np.abs(np.take_along_axis(got, ref["top_ids"], axis=1) - ref["top_values"]).max() < 5e-4
    assert np.array_equal(got.argmax(1), ref["top_ids"][:, 0])


LLAMA31 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _llamacpp_rope_freqs(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py writes for Llama 3.x: the divisor of each rotary frequency."""
    freq = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    lo_wav = scaling["original_max_position_embeddings"] / scaling["low_freq_factor"]
    hi_wav = scaling["original_max_position_embeddings"] / scaling["high_freq_factor"]
    out = []
    for f in freq:
        wavelen = 2 * np.pi / f
        if wavelen < hi_wav:
            out.append(1.0)
        elif wavelen > lo_wav:
            out.append(scaling["factor"])
        else:
            s = (scaling["original_max_position_embeddings"] / wavelen - scaling["low_freq_factor"]) / (
                scaling["high_freq_factor"] - scaling["low_freq_factor"]
            )
            out.append(1 / ((1 - s) / scaling["factor"] + s))
    return np.array(out)


@pytest.mark.parametrize("scaling", [LLAMA31, {**LLAMA31, "factor": 32.0}])  # Llama 3.1, Llama 3.2
def test_rope_freqs_become_llama3_rope_scaling(scaling, tmp_path):
    # head_dim 128 and theta 500000 as in Llama 3.x, so the factors span all three regions
    hf = make_tiny_model(
        tmp_path / "hf", hidden=256, heads=2, kv_heads=1, head_dim=128, rope_theta=500000.0, rope_scaling=scaling
    )
    freqs = _llamacpp_rope_freqs(128, 500000.0, scaling)
    assert 1 < len({round(f, 3) for f in freqs}) and 1.0 in freqs and scaling["factor"] in freqs
    g = write_gguf(hf, tmp_path / "m.gguf", lambda n, a: "F32", rope_freqs=freqs)
    with EllmFile(_convert(g, tmp_path / "g.ellm", quant="f32")) as f:
        assert f.config["rope_scaling"] == scaling
    ids = list(range(1, 40))
    want = _logits(_convert(hf, tmp_path / "hf.ellm", quant="f32"), ids)
    np.testing.assert_allclose(_logits(tmp_path / "g.ellm", ids), want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_rope_freqs_that_are_not_llama3_are_refused(hf, tmp_path):
    cfg = json.loads((hf / "config.json").read_text())
    half = cfg["hidden_size"] // cfg["num_attention_heads"] // 2
    for bad, err in (
        (np.linspace(1.0, 3.0, half) ** 2, UnsupportedModelError),  # not one straight line in 1/wavelength
        (np.ones(half + 1), ConvertError),  # wrong length
        (np.r_[np.ones(half - 1), -1.0], ConvertError),  # a negative divisor
    ):
        g = write_gguf(hf, tmp_path / "bad.gguf", lambda n, a: "F32", rope_freqs=bad)
        with pytest.raises(err, match="rope_freqs"):
            _convert(g, tmp_path / "x.ellm", quant="f32")
    assert not (tmp_path / "x.ellm").exists()
