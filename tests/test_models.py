"""Model numerics: edgellm's forward pass vs a plain numpy one and vs logits logged from transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_weights
from numpy_llama import forward as numpy_forward

import edgellm

REFERENCE = Path(__file__).parent / "data" / "reference"
STORIES_PROMPT = [1, 403, 407, 261, 378]
# transformers' greedy continuation of STORIES_PROMPT (shared/FACTS.md)
STORIES_GREEDY_20 = [432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292]

CASES = {
    "llama-gqa": dict(model_type="llama", heads=6, kv_heads=2, head_dim=16, inter=100),
    "llama3-scaled": dict(
        model_type="llama",
        tied=True,
        heads=4,
        kv_heads=2,
        head_dim=8,
        hidden=32,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    "llama-linear": dict(model_type="llama", rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "mistral": dict(model_type="mistral", heads=8, kv_heads=2, head_dim=8, hidden=40, inter=72),
    "qwen2": dict(model_type="qwen2", tied=True, heads=4, kv_heads=2, head_dim=12, hidden=36, inter=90),
}


def _ids(n: int, vocab: int, seed: int = 1) -> list[int]:
    return [1] + [int(i) for i in np.random.default_rng(seed).integers(3, vocab, n - 1)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_f32_logits_match_numpy_reference(case, tiny_model, tmp_path):
    src = tiny_model(**CASES[case])
    out = edgellm.convert(src, tmp_path / "m.ellm", quant="f32", progress=False).path
    weights, cfg = load_weights(src)
    ids = _ids(24, cfg["vocab_size"])
    with edgellm.load(out) as m:
        got = m.logits(ids)
    want = numpy_forward(weights, cfg, ids)
    assert got.shape == (24, cfg["vocab_size"]) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_kv_cache_decode_matches_full_pass(case, tiny_model, tmp_path):
    """Prefill 16 tokens, then feed 8 one at a time through the decode kernels (f32: exact-ish)."""
    src = tiny_model(**CASES[case])
    out = edgellm.convert(src, tmp_path / "m.ellm", quant="f32", progress=False).path
    ids = _ids(24, 64)
    with edgellm.load(out) as m:
        full = m.logits(ids)
        m.session.ids = []
        rows = [m.session.prefill(ids[:16]).copy()]
        rows += [m.session.step(t).copy() for t in ids[16:23]]
    np.testing.assert_allclose(np.stack(rows), full[15:23], atol=1e-4, rtol=0)


def test_stories_f32_matches_numpy_and_greedy(stories_dir, stories_ellm):
    weights, cfg = load_weights(stories_dir)
    with edgellm.load(stories_ellm["f32"]) as m:
        np.testing.assert_allclose(
            m.logits(STORIES_PROMPT), numpy_forward(weights, cfg, STORIES_PROMPT), atol=1e-4, rtol=0
        )
        ids = list(STORIES_PROMPT)
        for _ in range(20):
            ids.append(int(np.argmax(m.logits(ids)[-1])))
    assert ids[len(STORIES_PROMPT) :] == STORIES_GREEDY_20


def test_stories_greedy_40_q8_text_equals_f32(stories_ellm):
    texts = {}
    for q in ("f32", "q8"):
        with edgellm.load(stories_ellm[q]) as m:
            texts[q] = m.generate("Once upon a time", max_tokens=40)
    assert "Lily" in texts["f32"]
    assert texts["q8"] == texts["f32"]


def _reference_cases():
    return sorted(p.name for p in REFERENCE.iterdir() if (p / "logits.npy").is_file()) if REFERENCE.is_dir() else []


@pytest.mark.parametrize("case", _reference_cases())
def test_logits_match_transformers(case, tmp_path, request):
    """Logits logged once from transformers (tools/make_reference.py) on the same weights, f32 storage."""
    d = REFERENCE / case
    src = d
    if case == "stories260K":
        src = request.getfixturevalue("stories_dir")
    elif not (d / "model.safetensors").is_file():
        pytest.skip(f"{case}: weights not stored")
    out = edgellm.convert(src, tmp_path / "m.ellm", quant="f32", progress=False).path
    ids = json.loads((d / "input_ids.json").read_text())
    with edgellm.load(out) as m:
        got = m.logits(ids)
    np.testing.assert_allclose(got, np.load(d / "logits.npy"), atol=1e-4, rtol=0)


def test_stories_greedy_40_equals_transformers(stories_ellm):
    """40 greedy tokens from our f32 file equal transformers' generate() on the same weights; the public stream
    gives one chunk per generated token, the last one with the last token, and its text is generate()'s."""
    want = json.loads((REFERENCE / "stories260K" / "greedy.json").read_text())
    assert len(want) == 40 and want[:20] == STORIES_GREEDY_20
    with edgellm.load(stories_ellm["f32"]) as m:
        chunks = list(m.stream(STORIES_PROMPT, max_tokens=40))
        text = m.generate(STORIES_PROMPT, max_tokens=40)
        assert text == m.tokenizer.decode(want)
    assert [c.token for c in chunks] == want
    assert [c.finish_reason for c in chunks] == [None] * 39 + ["length"]
    assert chunks[-1].stats.generated_tokens == 40 and all(c.stats is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == text
