"""The RAM budget as the CLI and load() spell it: bytes, a size like "300MB", or a share of the model file."""

from __future__ import annotations

import math
import re

from ..errors import EdgeLLMError, InvalidArgumentError
from .plan import parse_size

_NOT_POSITIVE = re.compile(r"\s*(-.*|[0.]+\s*[a-zA-Z]*)\s*")  # "-5", "0", "0MB"
BUDGET_HELP = "bytes, a size like 300MB or 1.5GiB, or a share of the model file like 50%"


def _share(value) -> float | None:
    """The fraction a "50%" budget names; None when `value` is not a percentage."""
    if not isinstance(value, str) or not value.strip().endswith("%"):
        return None
    try:
        frac = float(value.strip()[:-1]) / 100
    except ValueError:
        raise InvalidArgumentError(f"cannot read the RAM budget {value!r}: use {BUDGET_HELP}") from None
    if not math.isfinite(frac) or frac <= 0:
        raise InvalidArgumentError(f"the RAM budget must be a positive share of the model file, got {value!r}")
    return frac


def _size(value) -> int:
    """parse_size with the budget's own messages (a negative size is refused as such, not as unreadable)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidArgumentError(f"the RAM budget must be {BUDGET_HELP}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"the RAM budget must be finite, got {value!r}")
    if isinstance(value, (int, float)) and value <= 0 or isinstance(value, str) and _NOT_POSITIVE.fullmatch(value):
        raise InvalidArgumentError(f"the RAM budget must be positive, got {value!r}")
    try:
        return parse_size(value)
    except EdgeLLMError:
        raise InvalidArgumentError(f"cannot read the RAM budget {value!r}: use {BUDGET_HELP}") from None


def parse_budget(value, model_bytes: int) -> int | None:
    """The RAM budget in bytes from every spelling the CLI and load() accept: an int, "300MB", "1.5GiB", or
    "50%" of the model file (`model_bytes`). None stays None: the runtime's default."""
    if value is None:
        return None
    frac = _share(value)
    return max(1, int(frac * model_bytes)) if frac is not None else _size(value)


def check_budget(value) -> None:
    """Raise InvalidArgumentError now for a budget that cannot be read, before any file is opened."""
    if value is not None and _share(value) is None:
        _size(value)
