"""One module per architecture family; found by model_type (mlx-lm style, no registry).

Each module declares what the rest of edgellm asks it: `ModelArgs` (from_dict of a config), `tensor_specs(args)`
(every tensor, name and shape, in file order), `LAYER_PIECES` (the order a layer uses its tensors), `RunState`
and `Transformer`. The converter and the runtime take the schema from here, so a new architecture is one file.
"""

from __future__ import annotations

import importlib

from ..errors import UnsupportedModelError

SUPPORTED = ("llama", "mistral", "qwen2")


def get_model_module(model_type: str | None):
    if model_type not in SUPPORTED:
        raise UnsupportedModelError(f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED)}")
    return importlib.import_module(f".{model_type}", __name__)


def model_args(cfg: dict):
    """(the model module, its ModelArgs) for a config.json object; raises what the model does not support."""
    module = get_model_module(cfg.get("model_type"))
    return module, module.ModelArgs.from_dict(cfg)
