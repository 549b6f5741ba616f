"""edgellm: run large language models on memory-starved devices."""
from .errors import (BudgetError, ConvertError, EdgeLLMError, FormatError, TokenizerError,
                     UnsupportedModelError)

__version__ = "0.1.0"
