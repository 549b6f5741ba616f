"""Mistral: the Llama block; its sliding window caps the context so full attention stays exact."""
from .llama import ModelArgs, RunState, Transformer

__all__ = ["ModelArgs", "RunState", "Transformer"]
