"""Shared fixtures: the ../shared data (skipped cleanly when absent) and tiny random models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

SHARED = Path(__file__).resolve().parents[2] / "shared"
STORIES = SHARED / "models" / "stories260K"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def stories_dir(shared_dir) -> Path:
    if not (STORIES / "model.safetensors").is_file():
        pytest.skip("stories260K is not present in ../shared")
    return STORIES


@pytest.fixture(scope="session")
def stories_ellm(stories_dir, tmp_path_factory):
    """stories260K converted once per session to each storage type: {"f32": Path, ...}."""
    import edgellm

    out = tmp_path_factory.mktemp("stories")
    return {
        q: edgellm.convert(stories_dir, out / f"stories-{q}.ellm", quant=q, progress=False).path
        for q in ("f32", "f16", "q8", "q4")
    }


TINY_TOKENIZER = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [],
    "normalizer": None,
    "pre_tokenizer": {"type": "Whitespace"},
    "post_processor": None,
    "decoder": None,
    "model": {
        "type": "WordLevel",
        "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 64)}},
        "unk_token": "<unk>",
    },
}


def make_tiny_model(
    path: Path,
    model_type: str = "llama",
    *,
    seed: int = 0,
    hidden: int = 48,
    layers: int = 2,
    heads: int = 6,
    kv_heads: int = 2,
    head_dim: int | None = 16,
    inter: int = 100,
    vocab: int = 64,
    tied: bool = False,
    rope_scaling: dict | None = None,
    rope_theta: float = 10000.0,
    dtype=np.float32,
    std: float = 0.2,
    biases: bool = False,
) -> Path:
    """Write a random HF-format checkpoint (config.json, model.safetensors, tokenizer files) to `path`. `biases`:
    llama's attention_bias and mlp_bias, a bias on every projection."""
    rng = np.random.default_rng(seed)
    hd = head_dim or hidden // heads
    cfg = {
        "model_type": model_type,
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hd,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-6,
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": 256,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        **({"attention_bias": True, "mlp_bias": True} if biases else {}),
    }
    w = lambda *s: (rng.standard_normal(s) * std).astype(dtype)  # noqa: E731
    t = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": (1 + w(hidden)).astype(dtype)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (1 + w(hidden)).astype(dtype)
        t[p + "post_attention_layernorm.weight"] = (1 + w(hidden)).astype(dtype)
        t[p + "self_attn.q_proj.weight"] = w(heads * hd, hidden)
        t[p + "self_attn.k_proj.weight"] = w(kv_heads * hd, hidden)
        t[p + "self_attn.v_proj.weight"] = w(kv_heads * hd, hidden)
        t[p + "self_attn.o_proj.weight"] = w(hidden, heads * hd)
        t[p + "mlp.gate_proj.weight"] = w(inter, hidden)
        t[p + "mlp.up_proj.weight"] = w(inter, hidden)
        t[p + "mlp.down_proj.weight"] = w(hidden, inter)
        if model_type == "qwen2":
            for n, rows in (("q_proj", heads * hd), ("k_proj", kv_heads * hd), ("v_proj", kv_heads * hd)):
                t[p + f"self_attn.{n}.bias"] = w(rows)
        if biases:
            for n, rows in (("self_attn.q_proj", heads * hd), ("self_attn.k_proj", kv_heads * hd),
                            ("self_attn.v_proj", kv_heads * hd), ("self_attn.o_proj", hidden),
                            ("mlp.gate_proj", inter), ("mlp.up_proj", inter), ("mlp.down_proj", hidden)):  # fmt: skip
                t[p + f"{n}.bias"] = w(rows)
    if not tied:
        t["lm_head.weight"] = w(vocab, hidden)
    path.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "tokenizer.json").write_text(json.dumps(TINY_TOKENIZER))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True})
    )
    return path


def load_weights(path: Path) -> tuple[dict, dict]:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors")), json.loads((path / "config.json").read_text())


@pytest.fixture
def tiny_model(tmp_path):
    return lambda **kw: make_tiny_model(tmp_path / f"tiny-{len(list(tmp_path.iterdir()))}", **kw)


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def six_layer_q4(root: Path) -> Path:
    """A q4 .ellm of 6 layers of 1.7 MB (hidden 512, 8 heads on 4 KV heads; test_stream's shape): big enough that
    a node budget of half the file streams (tests/test_cluster*.py)."""
    import edgellm

    src = make_tiny_model(root / "src", hidden=512, heads=8, kv_heads=4, head_dim=64, inter=1408, layers=6, std=0.05)
    return edgellm.convert(src, root / "m.ellm", quant="q4", progress=False).path


def synthetic_ellm(root: Path, *, quant: str, codec: str = "auto", **shape) -> Path:
    """A synthetic checkpoint of the given shape (untied, rope_theta 1e4, f16 source) converted to .ellm."""
    import edgellm
    from edgellm.synthetic import SyntheticConfig, make_checkpoint

    cfg = SyntheticConfig(tie_word_embeddings=False, rope_theta=1e4, **shape)
    src = make_checkpoint(root / "src", cfg, dtype="float16")
    return edgellm.convert(src, root / "m.ellm", quant=quant, codec=codec, progress=False).path
