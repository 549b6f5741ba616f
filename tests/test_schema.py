"""Architecture knowledge lives in edgellm/models/<arch>.py: the tensors a config implies (`tensor_specs`), the
order a layer uses them (`LAYER_PIECES`), and how a config's rope is read. The converter writes what the model
module declares, and the forward pass asks for a layer's tensors in the declared order."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_tiny_model

import edgellm
from edgellm.converter.archs import plan
from edgellm.errors import UnsupportedModelError
from edgellm.format import EllmFile
from edgellm.models import SUPPORTED, get_model_module, model_args
from edgellm.models.llama import rope_settings

CASES = {  # make_tiny_model arguments: every architecture, tied and untied heads, qwen2's biases
    "llama": dict(model_type="llama"),
    "llama-tied": dict(model_type="llama", tied=True),
    "mistral": dict(model_type="mistral", heads=8, kv_heads=2, head_dim=8, hidden=40, inter=72),
    "qwen2": dict(model_type="qwen2", heads=4, kv_heads=2, head_dim=12, hidden=36, inter=90),
    "qwen2-tied": dict(model_type="qwen2", tied=True, heads=4, kv_heads=2, head_dim=12, hidden=36, inter=90),
}
FLAT = [m for piece in get_model_module("llama").LAYER_PIECES for m in piece]


def _cfg(**kw) -> dict:
    return {
        "model_type": "llama",
        "hidden_size": 8,
        "intermediate_size": 12,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": 10,
        **kw,
    }


def test_every_supported_architecture_declares_its_schema():
    assert set(SUPPORTED) == {"llama", "mistral", "qwen2"}
    for mt in SUPPORTED:
        m = get_model_module(mt)
        for name in ("ModelArgs", "RunState", "Transformer", "tensor_specs", "LAYER_PIECES"):
            assert hasattr(m, name), (mt, name)
        specs = m.tensor_specs(m.ModelArgs.from_dict(_cfg(model_type=mt)))
        assert [s.role for s in specs] == ["embed"] + ["layer"] * (len(specs) - 3) + ["norm", "head"]
    with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2"):
        get_model_module("gpt2")


def test_llama_schema_written_out():
    """One small config spelled out by hand (hidden 8, 2 heads of 4, 1 kv head, intermediate 12, vocab 10)."""
    p = "model.layers.0."
    want = [
        ("model.embed_tokens.weight", (10, 8), "embed", -1),
        (p + "input_layernorm.weight", (8,), "layer", 0),
        (p + "self_attn.q_proj.weight", (8, 8), "layer", 0),
        (p + "self_attn.k_proj.weight", (4, 8), "layer", 0),
        (p + "self_attn.v_proj.weight", (4, 8), "layer", 0),
        (p + "self_attn.o_proj.weight", (8, 8), "layer", 0),
        (p + "post_attention_layernorm.weight", (8,), "layer", 0),
        (p + "mlp.gate_proj.weight", (12, 8), "layer", 0),
        (p + "mlp.up_proj.weight", (12, 8), "layer", 0),
        (p + "mlp.down_proj.weight", (8, 12), "layer", 0),
        ("model.norm.weight", (8,), "norm", 1),
        ("lm_head.weight", (10, 8), "head", 1),
    ]
    module, args = model_args(_cfg())
    assert [(s.name, s.shape, s.role, s.layer) for s in module.tensor_specs(args)] == want
    tied = module.tensor_specs(module.ModelArgs.from_dict(_cfg(tie_word_embeddings=True)))
    assert [s.name for s in tied] == [w[0] for w in want[:-1]]  # tied: the head is the embedding
    # qwen2: q/k/v biases right after their weights, none on o_proj
    module, args = model_args(_cfg(model_type="qwen2"))
    names = [s.name[len(p) :] for s in module.tensor_specs(args) if s.role == "layer"]
    assert names[1:8] == [
        "self_attn.q_proj.weight",
        "self_attn.q_proj.bias",
        "self_attn.k_proj.weight",
        "self_attn.k_proj.bias",
        "self_attn.v_proj.weight",
        "self_attn.v_proj.bias",
        "self_attn.o_proj.weight",
    ]
    assert [s.shape for s in module.tensor_specs(args) if s.name.endswith(".bias")] == [(8,), (4,), (4,)]
    # llama's attention_bias / mlp_bias switches
    module, args = model_args(_cfg(attention_bias=True, mlp_bias=True))
    assert sum(s.name.endswith(".bias") for s in module.tensor_specs(args)) == 7


@pytest.mark.parametrize("case", sorted(CASES))
def test_converter_writes_the_model_modules_declaration(case, tmp_path):
    src = make_tiny_model(tmp_path / "src", **CASES[case])
    out = edgellm.convert(src, tmp_path / "m.ellm", quant="q4", progress=False).path
    with EllmFile(out) as f:
        module, args = model_args(f.config)
        specs = module.tensor_specs(args)
        assert [(e.name, tuple(e.shape), e.layer) for e in f.entries] == [(s.name, s.shape, s.layer) for s in specs]
        assert [e.layout.stype != "f32" for e in f.entries] == [s.matrix for s in specs]
        names = {e.name for e in f.entries}
        assert plan(f.config, names) == specs  # what the converter checks the checkpoint for


def test_layer_pieces_are_the_streamed_piece_order(tmp_path):
    """Streamed layers travel in the pieces the file's architecture declares, in its order."""
    from edgellm.runtime.units import piece_order, unit_pieces

    want = (
        ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ("self_attn.o_proj",),
        ("post_attention_layernorm", "mlp.gate_proj"),
        ("mlp.up_proj",),
        ("mlp.down_proj",),
    )
    for mt in SUPPORTED:
        assert get_model_module(mt).LAYER_PIECES == want
    path = edgellm.convert(make_tiny_model(tmp_path / "src"), tmp_path / "m.ellm", progress=False).path
    with EllmFile(path) as f:
        assert piece_order(f) == want
        pieces = unit_pieces(f, 0, f.config["num_hidden_layers"])
        short = [[n.removeprefix("model.layers.0.").rsplit(".", 1)[0] for n in p] for p in pieces]
        assert short == [list(p) for p in want]


class Recorder:
    """A weight provider around the real one that records every tensor name the forward pass asks for."""

    def __init__(self, inner):
        self.inner, self.asked = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def layer(self, i: int):
        return RecordedLayer(self.inner.layer(i), i, self.asked)


class RecordedLayer:
    def __init__(self, inner, i, asked):
        self.inner, self.i, self.asked = inner, i, asked

    def __getitem__(self, name):
        self.asked.append((self.i, name))
        return self.inner[name]

    def get(self, name, default=None):
        self.asked.append((self.i, name))
        return self.inner.get(name, default)


@pytest.mark.parametrize("case", ["llama", "qwen2"])
def test_forward_asks_for_a_layers_tensors_in_the_declared_order(case, tmp_path):
    src = make_tiny_model(tmp_path / "src", **CASES[case])
    out = edgellm.convert(src, tmp_path / "m.ellm", quant="f32", progress=False).path
    with edgellm.load(out, ram_budget="1GB") as m:
        rec = Recorder(m.transformer.provider)
        m.transformer.provider = rec
        want = m.logits([1, 5, 9]).copy()
        m.transformer.provider = rec.inner
        np.testing.assert_array_equal(m.logits([1, 5, 9]), want)  # recording changed nothing
        specs = get_model_module(m.config.model_type).tensor_specs(m.config)
    for i in range(m.config.num_hidden_layers):
        asked = [name for layer, name in rec.asked if layer == i]
        modules = [n.rsplit(".", 1)[0] for n in asked]
        assert [mod for j, mod in enumerate(modules) if j == 0 or mod != modules[j - 1]] == FLAT
        # every tensor the layer declares was asked for, in the declared (= file) order
        prefix = f"model.layers.{i}."
        declared = [s.name[len(prefix) :] for s in specs if s.layer == i]
        assert [n for n in asked if n in declared] == declared


def test_rope_is_read_in_one_place():
    assert rope_settings({"rope_theta": 5.0}, 1.0) == (5.0, None)
    assert rope_settings({}, 1.0) == (1.0, None)
    assert rope_settings({"rope_scaling": {"type": "linear", "factor": 2.0}}, 1.0) == (
        1.0,
        {"rope_type": "linear", "factor": 2.0},
    )
    assert rope_settings({"rope_scaling": {"rope_type": "default"}}, 1.0) == (1.0, None)
    # transformers 5: one rope_parameters object
    assert rope_settings({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, 1.0) == (
        5e5,
        {"rope_type": "llama3", "factor": 8.0},
    )
    assert rope_settings({"rope_parameters": {"rope_type": "default", "rope_theta": 7.0}}, 1.0) == (7.0, None)
    with pytest.raises(UnsupportedModelError, match="yarn"):
        rope_settings({"rope_scaling": {"rope_type": "yarn", "factor": 2}}, 1.0)
    assert get_model_module("qwen2").ModelArgs.from_dict(_cfg(model_type="qwen2")).rope_theta == 1e6


def test_unsupported_configs_are_refused_by_the_model_module(tmp_path):
    with pytest.raises(UnsupportedModelError, match="gelu"):
        model_args(_cfg(hidden_act="gelu"))
    with pytest.raises(UnsupportedModelError, match="yarn"):
        plan(_cfg(rope_scaling={"rope_type": "yarn", "factor": 2}), set())
    with pytest.raises(UnsupportedModelError, match="intermediate_size"):
        model_args({k: v for k, v in _cfg().items() if k != "intermediate_size"})
    # sliding windows: Mistral's caps the context; Qwen2's only with use_sliding_window
    assert model_args(_cfg(model_type="mistral", sliding_window=64))[1].max_context() == 64
    assert model_args(_cfg(model_type="qwen2", sliding_window=64))[1].max_context() == 2048
    assert model_args(_cfg(model_type="qwen2", sliding_window=64, use_sliding_window=True))[1].max_context() == 64
    assert model_args(_cfg(sliding_window=64))[1].max_context() == 2048  # llama has no window
