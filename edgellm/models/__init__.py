"""One module per architecture family; found by model_type (mlx-lm style, no registry)."""
from __future__ import annotations

import importlib

from ..errors import UnsupportedModelError

SUPPORTED = ("llama", "mistral", "qwen2")


def get_model_module(model_type: str):
    if model_type not in SUPPORTED:
        raise UnsupportedModelError(f"model_type {model_type!r} is not supported; supported: "
                                    f"{', '.join(SUPPORTED)}")
    return importlib.import_module(f".{model_type}", __name__)
