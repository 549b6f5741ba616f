"""Which Hugging Face architectures convert, and the tensors each must have, in file order."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConvertError, UnsupportedModelError

SUPPORTED = ("llama", "mistral", "qwen2")
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)   # buffers some old checkpoints saved; recomputed at run time


@dataclass(frozen=True)
class Planned:
    name: str
    shape: tuple[int, ...]
    layer: int           # -1 embedding, 0..L-1 blocks, L final norm and head
    matrix: bool         # quantizable 2-D weight (norms and biases stay f32)


def dims(cfg: dict) -> dict:
    try:
        h, nh, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
        return {"hidden": h, "heads": nh, "kv_heads": cfg.get("num_key_value_heads") or nh,
                "head_dim": cfg.get("head_dim") or h // nh, "inter": cfg["intermediate_size"],
                "vocab": cfg["vocab_size"], "layers": layers}
    except KeyError as e:
        raise ConvertError(f"config.json lacks {e.args[0]!r}") from None


def tied_embeddings(cfg: dict) -> bool:
    """transformers' LlamaConfig, MistralConfig and Qwen2Config all default to untied."""
    return bool(cfg.get("tie_word_embeddings", False))


def check_supported(cfg: dict) -> None:
    mt = cfg.get("model_type")
    if mt not in SUPPORTED:
        raise UnsupportedModelError(f"model_type {mt!r} is not supported; supported: {', '.join(SUPPORTED)}")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedModelError(f"hidden_act {act!r} is not supported (edgellm implements silu)")
    rs = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind not in ("default", "linear", "llama3"):
        raise UnsupportedModelError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3)")


def plan(cfg: dict, available: set[str]) -> list[Planned]:
    """Every tensor to store, in file order; raises if a required one is missing or an unknown one exists."""
    check_supported(cfg)
    d = dims(cfg)
    h, q_out, kv_out, inter = d["hidden"], d["heads"] * d["head_dim"], d["kv_heads"] * d["head_dim"], d["inter"]
    qkv_bias = cfg["model_type"] == "qwen2" or bool(cfg.get("attention_bias"))
    o_bias = cfg["model_type"] == "llama" and bool(cfg.get("attention_bias"))
    mlp_bias = bool(cfg.get("mlp_bias"))
    out = [Planned("model.embed_tokens.weight", (d["vocab"], h), -1, True)]
    for i in range(d["layers"]):
        p = f"model.layers.{i}."
        block = [(p + "input_layernorm.weight", (h,), False)]
        for proj, rows in (("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)):
            block.append((p + f"self_attn.{proj}.weight", (rows, h), True))
            if qkv_bias:
                block.append((p + f"self_attn.{proj}.bias", (rows,), False))
        block.append((p + "self_attn.o_proj.weight", (h, q_out), True))
        if o_bias:
            block.append((p + "self_attn.o_proj.bias", (h,), False))
        block.append((p + "post_attention_layernorm.weight", (h,), False))
        for proj, shape in (("gate_proj", (inter, h)), ("up_proj", (inter, h)), ("down_proj", (h, inter))):
            block.append((p + f"mlp.{proj}.weight", shape, True))
            if mlp_bias:
                block.append((p + f"mlp.{proj}.bias", (shape[0],), False))
        out += [Planned(n, s, i, m) for n, s, m in block]
    out.append(Planned("model.norm.weight", (h,), d["layers"], False))
    if not tied_embeddings(cfg):   # a tied checkpoint may still carry a copy of lm_head: it is skipped
        out.append(Planned("lm_head.weight", (d["vocab"], h), d["layers"], True))
    missing = [p.name for p in out if p.name not in available]
    if missing:
        raise ConvertError(f"checkpoint lacks {len(missing)} tensor(s) the {cfg['model_type']} config needs, "
                           f"first: {missing[0]!r}")
    planned = {p.name for p in out} | {"lm_head.weight"}
    extra = sorted(n for n in available if n not in planned and not n.endswith(IGNORED_SUFFIXES))
    if extra:
        raise UnsupportedModelError(f"checkpoint has {len(extra)} tensor(s) edgellm does not know, first: "
                                    f"{extra[0]!r}")
    return out
