"""Hugging Face checkpoint -> .ellm (the package is `converter` so that `edgellm.convert` stays the function)."""

from ..models import SUPPORTED
from .converter import ConvertReport, convert

__all__ = ["convert", "ConvertReport", "SUPPORTED"]
