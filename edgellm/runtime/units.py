"""What the forward pass asks for at once, by tensor name: units, and the pieces a streamed layer travels in.

A *unit* is layer i (0..L-1), or the head (L: final norm + lm_head, which for a tied model is the embedding
table). A streamed layer travels in *pieces*, in the order the forward pass uses its tensors, so a slot holds
one piece (at most one MLP matrix) instead of a whole layer: for TinyLlama q4 the two slots shrink from
2 x 24.8 MB to 2 x 6.5 MB, and what they free is pinned instead of read again every token.
"""

from __future__ import annotations

from ..format import EllmFile
from ..models import get_model_module

EMBED = "model.embed_tokens.weight"
PIECE_ORDER = get_model_module("llama").LAYER_PIECES  # declared by the model (mistral and qwen2 reuse llama's)


def layer_prefix(i: int) -> str:
    return f"model.layers.{i}."


def unit_names(f: EllmFile, unit: int, n_layers: int) -> list[str]:
    """The tensor names of a unit: a layer's, or the head's (final norm + lm_head or the tied embedding)."""
    if unit < n_layers:
        return [n for n in f.tensors if n.startswith(layer_prefix(unit))]
    names = ["model.norm.weight"]
    return names + (["lm_head.weight"] if "lm_head.weight" in f.tensors else [EMBED])


def unit_pieces(f: EllmFile, unit: int, n_layers: int) -> list[list[str]]:
    """A unit's tensor names split into pieces in use order (the head is one piece; a tensor matching no
    known name goes with the first piece, so it is there whenever the layer is)."""
    names = unit_names(f, unit, n_layers)
    if unit >= n_layers:
        return [names]
    pieces: list[list[str]] = [[] for _ in PIECE_ORDER]
    for n in names:
        short = n[len(layer_prefix(unit)) :]
        k = next((j for j, keys in enumerate(PIECE_ORDER) if any(short.startswith(key + ".") for key in keys)), 0)
        pieces[k].append(n)
    return [p for p in pieces if p]
