"""Which tensors a Hugging Face checkpoint must hold to convert: what its model module declares.

The schema itself lives with the architecture (edgellm/models/<arch>.py: `tensor_specs`); this module only
checks a checkpoint against it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConvertError, UnsupportedModelError
from ..models import model_args

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)   # buffers some old checkpoints saved; recomputed at run time


@dataclass(frozen=True)
class Planned:
    """A models.base.TensorSpec as the file-side checks (models/tensors.py) take it."""
    name: str
    shape: tuple[int, ...]
    layer: int           # -1 embedding, 0..L-1 blocks, L final norm and head
    matrix: bool         # quantizable 2-D weight (norms and biases stay f32)


def expected_tensors(cfg: dict) -> list[Planned]:
    """Every tensor a `cfg` model has, in file order (formats/SPEC.md, "Tensors a model needs")."""
    module, args = model_args(cfg)
    return [Planned(s.name, s.shape, s.layer, s.matrix) for s in module.tensor_specs(args)]


def plan(cfg: dict, available: set[str]) -> list[Planned]:
    """Every tensor to store, in file order; raises if a required one is missing or an unknown one exists."""
    out = expected_tensors(cfg)
    missing = [p.name for p in out if p.name not in available]
    if missing:
        raise ConvertError(f"checkpoint lacks {len(missing)} tensor(s) the {cfg['model_type']} config needs, "
                           f"first: {missing[0]!r}")
    planned = {p.name for p in out} | {"lm_head.weight"}   # a tied checkpoint may carry lm_head: it is skipped
    extra = sorted(n for n in available if n not in planned and not n.endswith(IGNORED_SUFFIXES))
    if extra:
        raise UnsupportedModelError(f"checkpoint has {len(extra)} tensor(s) edgellm does not know, first: "
                                    f"{extra[0]!r}")
    return out
