"""Every argument a caller can get wrong, checked where it enters: the API and the CLI call the same checks.

A bad value raises InvalidArgumentError (an EdgeLLMError and a ValueError) whose message names the API
argument and its CLI flag, so one message serves both. Text that is not valid Unicode (a lone surrogate,
which is how Python carries undecodable argv bytes) is repaired with U+FFFD and a TextReplaced warning
rather than refused: a stray byte in a prompt should not cost the user their run.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from dataclasses import asdict, dataclass, fields

from ..errors import InvalidArgumentError

# API argument -> CLI flag, so one message serves both callers
FLAGS = {
    "max_tokens": "--max-tokens",
    "temperature": "--temp",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repetition_penalty": "--repeat-penalty",
    "seed": "--seed",
    "stop": "--stop",
    "threads": "--threads",
    "context": "--context",
    "slots": "--slots",
    "ram_budget": "--ram-budget",
    "quant": "--quant",
    "speculative": "--speculative",
}

_SURROGATE = re.compile("[\ud800-\udfff]")


class TextReplaced(UserWarning):
    """Input text held invalid UTF-8 (or lone surrogates); those characters became U+FFFD."""


def _name(name: str) -> str:
    flag = FLAGS.get(name)
    return f"{name} ({flag})" if flag else name


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """`value` as an int in lo..hi (hi None: no upper bound); bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{_name(name)} must be an integer, got {value!r}")
    v = int(value)  # exact for any Integral
    if v < lo or (hi is not None and v > hi):
        span = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise InvalidArgumentError(f"{_name(name)} must be {span}, got {value}")
    return v


def check_real(name: str, value, lo: float, hi: float = math.inf, *, lo_open: bool = False) -> float:
    """`value` as a finite float in [lo, hi] (or (lo, hi] with lo_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidArgumentError(f"{_name(name)} must be a finite number, got {value!r}")
    v = float(value)
    if v < lo or v > hi or (lo_open and v == lo):
        left = "(" if lo_open else "["
        span = f"> {lo}" if lo_open and hi == math.inf else f">= {lo}" if hi == math.inf else f"in {left}{lo}, {hi}]"
        raise InvalidArgumentError(f"{_name(name)} must be {span}, got {value}")
    return v


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens, validated on construction; the keyword arguments of Model.stream/generate/chat."""

    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # 1: off
    seed: int | None = None  # None: a fresh random seed
    stop: tuple[str, ...] = ()
    speculative: bool | None = None  # None: draft and verify several tokens a pass wherever that is lossless

    def __post_init__(self) -> None:
        check_int("max_tokens", self.max_tokens, 0)
        check_real("temperature", self.temperature, 0.0)
        check_int("top_k", self.top_k, 0)
        check_real("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        check_real("min_p", self.min_p, 0.0, 1.0)
        check_real("repetition_penalty", self.repetition_penalty, 0.0, lo_open=True)
        if self.seed is not None:
            check_int("seed", self.seed, 0)  # numpy refuses negative seeds
        object.__setattr__(self, "stop", _stops(self.stop))
        if self.speculative not in (None, True, False):
            raise InvalidArgumentError(f"{_name('speculative')} must be None, True or False, got {self.speculative!r}")

    def as_kwargs(self) -> dict:
        return asdict(self)


def _stops(stop) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else stop if stop is not None else ()
    try:
        stops = tuple(stops)
    except TypeError:
        raise InvalidArgumentError(f"{_name('stop')} must be a string or a list of strings, got {stop!r}") from None
    if not all(isinstance(s, str) for s in stops):
        raise InvalidArgumentError(f"{_name('stop')} must be a string or a list of strings, got {stop!r}")
    return tuple(clean_text(s, "a stop string") for s in stops)


def check_sampling(kwargs: dict) -> SamplingParams:
    """SamplingParams from keyword arguments; an unknown keyword (a typo) is an error, not ignored."""
    known = {f.name for f in fields(SamplingParams)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise InvalidArgumentError(f"unknown sampling argument {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return SamplingParams(**kwargs)


def max_threads() -> int:
    """Threads numba's pool was started with: more cannot be used."""
    import numba

    return numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]


def check_load_args(*, threads=None, context=None, slots=2, ram_budget=None, decode_threads=1) -> None:
    """edgellm.load()'s arguments that make sense without the model; the context's upper bound (the model's
    own limit) and the budget's sufficiency are checked once the file is open."""
    if threads is not None:
        check_int("threads", threads, 1, max_threads())
    if context is not None:
        check_int("context", context, 1)
    check_int("slots", slots, 1)
    check_int("decode_threads", decode_threads, 1)
    from ..runtime.budget import check_budget

    check_budget(ram_budget)


def clean_text(text: str, what: str = "the text") -> str:
    """`text` with every lone surrogate replaced by U+FFFD (Python decodes undecodable argv and stdin bytes
    to surrogates; the tokenizer refuses them). Warns TextReplaced when it changed anything."""
    if not isinstance(text, str) or not _SURROGATE.search(text):
        return text
    n = len(_SURROGATE.findall(text))
    warnings.warn(f"{what}: invalid UTF-8 replaced with U+FFFD ({n} character(s))", TextReplaced, stacklevel=2)
    return _SURROGATE.sub("\ufffd", text)


def clean_messages(messages) -> list:
    """Chat messages with clean_text applied to each string content (other messages pass through as given)."""
    out = []
    for m in messages:
        if isinstance(m, dict) and isinstance(m.get("content"), str) and _SURROGATE.search(m["content"]):
            m = dict(m, content=clean_text(m["content"], f"the {m.get('role', 'chat')} message"))
        out.append(m)
    return out


def decode_utf8(data: bytes, what: str) -> str:
    """Bytes read from a file or stdin as text; invalid UTF-8 becomes U+FFFD, with a TextReplaced warning."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        warnings.warn(f"{what}: invalid UTF-8 replaced with U+FFFD", TextReplaced, stacklevel=2)
        return text
