"""What the forward pass asks for at once, by tensor name: units, and the pieces a streamed layer travels in.

A *unit* is layer i (0..L-1), or the head (L: final norm + lm_head, which for a tied model is the embedding
table). A streamed layer travels in *pieces*, in the order the forward pass uses its tensors, so a slot holds
one piece (at most one MLP matrix) instead of a whole layer: for TinyLlama q4 the two slots shrink from
2 x 24.8 MB to 2 x 6.5 MB, and what they free is pinned instead of read again every token. The names and the
piece order come from the file's architecture module (models/<model_type>.py: NAMES, LAYER_PIECES).
"""

from __future__ import annotations

from ..format import EllmFile
from ..models import get_model_module
from ..models.base import TensorNames


def names_of(f: EllmFile) -> TensorNames:
    return get_model_module(f.config.get("model_type")).NAMES


def piece_order(f: EllmFile) -> tuple[tuple[str, ...], ...]:
    """The module names of a layer, grouped in pieces, in use order."""
    return get_model_module(f.config.get("model_type")).LAYER_PIECES


def head_names(f: EllmFile) -> tuple[str, str]:
    """(final norm, what computes the logits): lm_head, or the embedding table of a tied model."""
    n = names_of(f)
    return n.final_norm, n.lm_head if n.lm_head in f.tensors else n.embed


def unit_names(f: EllmFile, unit: int, n_layers: int) -> list[str]:
    """The tensor names of a unit: a layer's, or the head's (final norm + lm_head or the tied embedding)."""
    if unit < n_layers:
        prefix = names_of(f).layer(unit)
        return [n for n in f.tensors if n.startswith(prefix)]
    return list(head_names(f))


def unit_pieces(f: EllmFile, unit: int, n_layers: int) -> list[list[str]]:
    """A unit's tensor names split into pieces in use order (the head is one piece; a tensor matching no
    known name goes with the first piece, so it is there whenever the layer is)."""
    names = unit_names(f, unit, n_layers)
    if unit >= n_layers:
        return [names]
    order, prefix = piece_order(f), names_of(f).layer(unit)
    pieces: list[list[str]] = [[] for _ in order]
    for n in names:
        short = n[len(prefix) :]
        k = next((j for j, keys in enumerate(order) if any(short.startswith(key + ".") for key in keys)), 0)
        pieces[k].append(n)
    return [p for p in pieces if p]
