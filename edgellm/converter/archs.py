"""Which tensors a Hugging Face checkpoint must hold to convert: what its model module declares.

The schema itself lives with the architecture (edgellm/models/<arch>.py: `tensor_specs`); this module only
checks a checkpoint against it.
"""

from __future__ import annotations

from ..errors import ConvertError, UnsupportedModelError
from ..models import model_args
from ..models.base import TensorSpec

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved; recomputed at run time


def plan(cfg: dict, available: set[str]) -> list[TensorSpec]:
    """Every tensor to store, in file order (the model module's tensor_specs); raises if the config is not
    supported, a tensor it needs is missing, or the checkpoint holds one edgellm does not know."""
    module, args = model_args(cfg)
    out = module.tensor_specs(args)
    missing = [p.name for p in out if p.name not in available]
    if missing:
        raise ConvertError(
            f"checkpoint lacks {len(missing)} tensor(s) the {cfg['model_type']} config needs, first: {missing[0]!r}"
        )
    planned = {p.name for p in out} | {"lm_head.weight"}  # a tied checkpoint may carry lm_head: it is skipped
    extra = sorted(n for n in available if n not in planned and not n.endswith(IGNORED_SUFFIXES))
    if extra:
        raise UnsupportedModelError(f"checkpoint has {len(extra)} tensor(s) edgellm does not know, first: {extra[0]!r}")
    return out
