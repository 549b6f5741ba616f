"""edgellm: run large language models on memory-starved devices."""

from .errors import (
    BudgetError,
    ConvertError,
    EdgeLLMError,
    FormatError,
    InvalidArgumentError,
    ModelBusyError,
    TokenizerError,
    UnsupportedModelError,
)

__version__ = "0.1.0"
__all__ = [
    "load",
    "plan",
    "convert",
    "EdgeLLMError",
    "FormatError",
    "BudgetError",
    "UnsupportedModelError",
    "ConvertError",
    "TokenizerError",
    "InvalidArgumentError",
    "ModelBusyError",
    "__version__",
]


def convert(src, dst, **kwargs):
    """Convert a Hugging Face model directory into an .ellm file; see edgellm.converter.converter.convert."""
    from .converter.converter import convert as _convert

    return _convert(src, dst, **kwargs)


def plan(path, **kwargs):
    """What load() would allocate, from the header alone: `edgellm.plan(path, ram_budget=None, context=None,
    device=None) -> Plan` with the breakdown, `fits` and `minimum_budget`; see edgellm.api.plan."""
    from .api import plan as _plan

    return _plan(path, **kwargs)


def load(path, **kwargs):
    """Open an .ellm model: `edgellm.load(path, ram_budget=None, threads=None, context=None, device=None)`."""
    from .api import load as _load

    return _load(path, **kwargs)
