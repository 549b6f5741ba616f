"""Named errors. The CLI prints `error: <message>` for any EdgeLLMError and exits non-zero."""


class EdgeLLMError(Exception):
    """Base class of every error a user can cause (bad path, bad file, bad budget...)."""


class FormatError(EdgeLLMError):
    """An .ellm file is truncated, corrupt, or of an unknown version."""


class BudgetError(EdgeLLMError):
    """The RAM budget is too small to run the model."""


class UnsupportedModelError(EdgeLLMError):
    """The source checkpoint uses an architecture or feature edgellm does not support."""


class ConvertError(EdgeLLMError):
    """A source checkpoint cannot be converted (missing files, pickle weights, bad tensors)."""


class TokenizerError(EdgeLLMError):
    """The tokenizer is missing or cannot be loaded."""


class InvalidArgumentError(EdgeLLMError, ValueError):
    """A flag or API argument is outside its range or of the wrong kind (e.g. max_tokens=-1, top_p=2)."""


class ModelBusyError(EdgeLLMError):
    """A Model is already generating on this thread (an unfinished stream() iterator): finish or close it first."""


class MissingExtraError(EdgeLLMError):
    """A feature needs an optional dependency group that is not installed (e.g. `pip install "edgellm[server]"`)."""
