"""The tensors a file must hold for the runtime to run it (formats/SPEC.md, "Tensors a model needs").

The list itself has one home, each architecture's `tensor_specs` (edgellm/models/<model_type>.py): the converter
writes it and this checks it.
"""

from __future__ import annotations

from ..errors import FormatError
from . import model_args
from .base import TensorSpec


def check_tensors(f) -> None:
    """Raise FormatError naming the first tensor the config of the open EllmFile `f` needs that the file lacks
    or holds with another shape, layer or storage type. Reads only the header: call it before any weight."""
    module, args = model_args(f.config)
    need = module.tensor_specs(args)
    names = {p.name for p in need}
    used_if_present = [
        TensorSpec(p.name[: -len("weight")] + "bias", p.shape[:1], "layer", p.layer)
        for p in need
        if p.role == "layer" and p.matrix
    ]
    if "lm_head.weight" not in names:  # tied: a head stored anyway is used instead of the embedding
        used_if_present.append(TensorSpec("lm_head.weight", need[0].shape, "head", need[-1].layer))
    mt = f.config.get("model_type")
    for p in need + [p for p in used_if_present if p.name not in names and p.name in f.tensors]:
        e = f.tensors.get(p.name)
        where = f"{f.path}: tensor {p.name!r}"
        if e is None:
            raise FormatError(
                f"{where} {list(p.shape)} is missing: this {mt} config needs it (the file is "
                f"incomplete; re-convert the model)"
            )
        if e.shape != p.shape:
            raise FormatError(f"{where} has shape {list(e.shape)}; this {mt} config needs {list(p.shape)}")
        if e.layer != p.layer:
            raise FormatError(f"{where} is recorded in layer {e.layer}; its name puts it in layer {p.layer}")
        if not p.matrix and e.layout.stype != "f32":
            raise FormatError(f"{where} is stored as {e.layout.stype}; norms and biases must be f32")
