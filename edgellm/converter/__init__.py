"""Hugging Face checkpoint -> .ellm (the package is `converter` so that `edgellm.convert` stays the function)."""
from .archs import SUPPORTED
from .converter import ConvertReport, convert

__all__ = ["convert", "ConvertReport", "SUPPORTED"]
