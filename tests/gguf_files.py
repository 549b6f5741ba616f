"""Write GGUF files for tests from a tiny Hugging Face checkpoint, as llama.cpp's converter lays them out
(ggml names, q/k rows permuted for its rotary layout, block-quantized types by the gguf package)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import load_weights

GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if hf in top:
        return top[hf]
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, i, *module, kind = hf.split(".")
    return f"blk.{i}.{GGUF_NAMES['.'.join(module)]}.{kind}"


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: each head's two rotary halves interleaved row by row."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def byte_tokens(vocab: int) -> list[str]:
    """Three control tokens, then single byte-level characters (a valid GPT-2 style vocabulary, no merges)."""
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    return ["<unk>", "<s>", "</s>"] + chars[: vocab - 3]


def write_gguf(
    hf: Path,
    out: Path,
    type_of: Callable[[str, np.ndarray], str],
    arch: str = "llama",
    strings: dict | None = None,
    rope_freqs: np.ndarray | None = None,
) -> Path:
    """`type_of(hf_name, array)` -> a GGML type name (F32, F16, Q8_0, Q4_0, Q4_1, ...) per tensor. `strings`:
    {key: text} written as strings in place of the numbers those `{arch}.*` keys should hold (hostile files).
    `rope_freqs`: written as the `rope_freqs.weight` tensor (llama.cpp's Llama 3.x rope scaling)."""
    import gguf

    weights, cfg = load_weights(hf)
    w = gguf.GGUFWriter(str(out), arch)
    numbers = {  # {arch}.key -> (the writer's method, value)
        "block_count": (w.add_block_count, cfg["num_hidden_layers"]),
        "context_length": (w.add_context_length, cfg["max_position_embeddings"]),
        "embedding_length": (w.add_embedding_length, cfg["hidden_size"]),
        "feed_forward_length": (w.add_feed_forward_length, cfg["intermediate_size"]),
        "attention.head_count": (w.add_head_count, cfg["num_attention_heads"]),
        "attention.head_count_kv": (w.add_head_count_kv, cfg["num_key_value_heads"]),
        "attention.layer_norm_rms_epsilon": (w.add_layer_norm_rms_eps, cfg["rms_norm_eps"]),
        "rope.freq_base": (w.add_rope_freq_base, cfg["rope_theta"]),
        "vocab_size": (w.add_vocab_size, cfg["vocab_size"]),
    }
    for key, (add, value) in numbers.items():
        if strings and key in strings:
            w.add_string(f"{arch}.{key}", strings[key])
        else:
            add(value)
    tokens = byte_tokens(cfg["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, np.float32))
    for name, a in weights.items():
        a = np.asarray(a, np.float32)
        if arch in ("llama", "mistral") and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg["num_attention_heads"] if "q_proj" in name else cfg["num_key_value_heads"]
            a = permute(a, heads)
        kind = type_of(name, a)
        qtype = gguf.GGMLQuantizationType[kind]
        if kind == "F32":
            w.add_tensor(gguf_name(name), a)
        elif kind == "F16":
            w.add_tensor(gguf_name(name), a.astype(np.float16))
        else:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
