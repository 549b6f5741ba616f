"""The .ellm file format v1 (spec: formats/SPEC.md)."""

from .reader import EllmFile, LayerSpan
from .spec import StoredChunk, TensorEntry
from .writer import Writer

__all__ = ["EllmFile", "LayerSpan", "StoredChunk", "TensorEntry", "Writer"]
