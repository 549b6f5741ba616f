"""edgellm: run large language models on memory-starved devices."""
from .errors import (BudgetError, ConvertError, EdgeLLMError, FormatError, TokenizerError,
                     UnsupportedModelError)

__version__ = "0.1.0"


def convert(src, dst, **kwargs):
    """Convert a Hugging Face model directory into an .ellm file; see edgellm.converter.converter.convert."""
    from .converter.converter import convert as _convert
    return _convert(src, dst, **kwargs)
