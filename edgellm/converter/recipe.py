"""Which storage type and group each tensor gets: the `--quant` recipes.

    f32, f16, q8   every matrix in that type
    q4             every matrix in q4, except the logits head (lm_head, or the embedding table of a tied
                   model) and the tensors the model module marks `sensitive`: those in q8 at the widest group
                   that divides their columns, as their error costs the most per byte
                   (tools/compare_llamacpp_quant.py). Symmetric types only.
    q4 + pure      every matrix in q4 (llama.cpp's --pure)
    auto           a GGUF tensor's own type where ours holds it exactly (Q4_1 as q4a), else the nearest wider one
Norms and biases are always f32.
"""

from __future__ import annotations

from ..models.base import TensorSpec
from ..quant import GROUP_SIZES
from .gguf import auto_stype


def _q8_wide(cols: int, group: int) -> tuple[str, int]:
    """q8, its scales made cheap by the widest group that leaves no padding (SmolLM2's 576 columns: 64): next
    to q4's error, q8's at group 64 or 128 is still negligible."""
    return "q8", max((g for g in GROUP_SIZES if cols % g == 0 and g >= group), default=group)


def storage(
    p: TensorSpec, quant: str, group: int, *, tied: bool, pure: bool = False, source_dtype: str = ""
) -> tuple[str, int]:
    """(stype, group) of tensor `p` under `--quant quant --group-size group`."""
    if not p.matrix:
        return "f32", group
    if quant == "auto":
        stype = auto_stype(source_dtype)
        return stype, 32 if stype == "q4a" else group  # q4a holds Q4_1 blocks: group 32 is its only group
    if quant != "q4" or pure:
        return quant, group
    if p.role == "head" or (p.role == "embed" and tied) or p.sensitive:
        return _q8_wide(p.shape[1], group)
    return "q4", group
