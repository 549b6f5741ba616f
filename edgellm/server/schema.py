"""OpenAI request bodies -> checked dataclasses; anything wrong or unsupported -> RequestError.

The rule for a field this server does not implement: refused (400) when it asks for something (n=2, tools,
logprobs, an image), accepted when it holds its default (n=1, tools=[], frequency_penalty=0), so a client never
gets an answer that silently differs from what it asked for. `null` means "the default", as in OpenAI's API.
Labels that change nothing (model, user, metadata...) are accepted as they are; a field nobody knows is refused.
This server's own knobs (top_k, min_p, repetition_penalty, speculative) are extra top-level fields.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class RequestError(Exception):
    """A request the server refuses: its HTTP status and OpenAI's error body {"error": {...}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> RequestError:
    return RequestError(400, message, param=param, code=code)


def unsupported(param: str, what: str) -> RequestError:
    return RequestError(400, f"{what} is not supported by this server", param=param, code="unsupported_parameter")


# -- the requests ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: Model.stream's keyword arguments, max_tokens still to be bounded by the context."""

    max_tokens: int | None = None  # None: what the context leaves, up to the server's --max-tokens
    temperature: float = 1.0  # OpenAI's default (edgellm's CLI picks 0.7 for chat; a client expects the API's)
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    speculative: bool | None = None  # None: the server's --[no-]speculative, else edgellm's default

    def kwargs(self, max_tokens: int, speculative_default: bool | None) -> dict:
        """Model.stream / Model.chat keyword arguments."""
        spec = self.speculative if self.speculative is not None else speculative_default
        return dict(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            stop=list(self.stop),
            speculative=spec,
        )


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": text}]
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | list[int]  # text, or token ids used as they are
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    include_usage: bool = False


# -- field checks (each returns the value, None for absent or null) --------------------------------------------
def _integer(body: dict, name: str, lo: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise bad(f"{name} must be an integer, got {json.dumps(v)}", name)
    if v < lo:
        raise bad(f"{name} must be >= {lo}, got {v}", name)
    return int(v)


def _number(body: dict, name: str, lo: float, hi: float = math.inf, lo_open: bool = False) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    try:
        x = float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else math.nan
    except OverflowError:  # an integer too large for a float
        x = math.inf
    if not math.isfinite(x):
        raise bad(f"{name} must be a number, got {json.dumps(v)[:40]}", name)
    if x < lo or x > hi or (lo_open and x == lo):
        left = "(" if lo_open else "["
        span = f"in {left}{lo}, {hi}]" if hi != math.inf else (f"> {lo}" if lo_open else f">= {lo}")
        raise bad(f"{name} must be {span}, got {v}", name)
    return x


def _boolean(body: dict, name: str) -> bool | None:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise bad(f"{name} must be true or false, got {json.dumps(v)}", name)
    return v


def _stops(body: dict) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop must be a string or a list of strings", "stop")
    if any(s == "" for s in stops):
        raise bad("stop strings must not be empty", "stop")
    return tuple(stops)


def _is_zero(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == 0


def _is_int(n: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v == n


_NEVER: Callable[[Any], bool] = lambda v: False  # noqa: E731  (only null is accepted)

# Fields accepted only at their default (null always), -> (is it the default?, what asking for more means).
INERT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (_is_int(1), "more than one choice (n > 1)"),
    "frequency_penalty": (_is_zero, "frequency_penalty (use repetition_penalty)"),
    "presence_penalty": (_is_zero, "presence_penalty (use repetition_penalty)"),
    "logit_bias": (lambda v: v == {}, "logit_bias"),
    "tools": (lambda v: v == [], "tool calling (tools)"),
    "tool_choice": (lambda v: v == "none", "tool calling (tool_choice)"),
    "functions": (lambda v: v == [], "function calling (functions)"),
    "function_call": (lambda v: v == "none", "function calling (function_call)"),
    "response_format": (lambda v: v == {"type": "text"}, "a response_format other than text"),
    "store": (lambda v: v is False, "storing completions (store)"),
    "modalities": (lambda v: v == ["text"], "output modalities other than text"),
    "service_tier": (lambda v: v in ("auto", "default"), "a service_tier other than auto"),
    "audio": (_NEVER, "audio output"),
    "prediction": (_NEVER, "predicted outputs (prediction)"),
    "reasoning_effort": (_NEVER, "reasoning_effort"),
    "verbosity": (_NEVER, "verbosity"),
    "web_search_options": (_NEVER, "web search"),
}
CHAT_INERT = {
    **INERT,
    "logprobs": (lambda v: v is False, "logprobs"),
    "top_logprobs": (_is_int(0), "top_logprobs"),
    "parallel_tool_calls": (lambda v: isinstance(v, bool), "parallel_tool_calls"),  # moot without tools
}
COMPLETION_INERT = {
    **INERT,
    "logprobs": (_is_int(0), "logprobs"),  # an integer in the completions API
    "echo": (lambda v: v is False, "echo"),
    "suffix": (lambda v: v == "", "suffix (fill in the middle)"),
    "best_of": (_is_int(1), "best_of > 1"),
}
# Labels: accepted, with no effect on the answer; the value must still have its documented type.
LABELS: dict[str, Callable[[Any], bool]] = {
    "model": lambda v: isinstance(v, str),  # one model per process: any name gets it (a request never loads one)
    "user": lambda v: isinstance(v, str),
    "safety_identifier": lambda v: isinstance(v, str),
    "prompt_cache_key": lambda v: isinstance(v, str),  # the KV cache is reused by prefix anyway
    "metadata": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
}
SAMPLING = {
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "stop",
    "speculative",
    "stream",
    "stream_options",
}


def _check_fields(body: dict, inert: dict, own: set[str]) -> None:
    """Every field known, each inert one at its default, each label of its type."""
    for name, v in body.items():
        if name in own or name in SAMPLING:
            continue
        if name in LABELS:
            if v is not None and not LABELS[name](v):
                raise bad(f"{name} has the wrong type: {json.dumps(v)[:80]}", name)
        elif name in inert:
            is_default, what = inert[name]
            if v is not None and not is_default(v):
                raise unsupported(name, what)
        else:
            raise bad(f"unknown field {name!r}", name, "unknown_parameter")


def _sampling(body: dict, max_tokens_field: str | None = None) -> Sampling:
    max_tokens = _integer(body, "max_tokens", 1)
    if max_tokens_field is not None:  # chat: max_completion_tokens is the newer name of the same limit
        newer = _integer(body, max_tokens_field, 1)
        if newer is not None and max_tokens is not None and newer != max_tokens:
            raise bad(f"max_tokens and {max_tokens_field} disagree: give one", max_tokens_field)
        max_tokens = newer if newer is not None else max_tokens
    d = Sampling()
    temperature, top_p = _number(body, "temperature", 0.0), _number(body, "top_p", 0.0, 1.0, lo_open=True)
    top_k, min_p = _integer(body, "top_k", 0), _number(body, "min_p", 0.0, 1.0)
    penalty = _number(body, "repetition_penalty", 0.0, lo_open=True)
    return Sampling(
        max_tokens=max_tokens,
        temperature=d.temperature if temperature is None else temperature,
        top_p=d.top_p if top_p is None else top_p,
        top_k=d.top_k if top_k is None else top_k,
        min_p=d.min_p if min_p is None else min_p,
        repetition_penalty=d.repetition_penalty if penalty is None else penalty,
        seed=_integer(body, "seed", 0),
        stop=_stops(body),
        speculative=_boolean(body, "speculative"),
    )


def _streaming(body: dict) -> tuple[bool, bool]:
    """(stream, stream_options.include_usage)."""
    stream = bool(_boolean(body, "stream"))
    opts = body.get("stream_options")
    if opts is None:
        return stream, False
    if not stream:
        raise bad("stream_options is only allowed when stream is true", "stream_options")
    if not isinstance(opts, dict):
        raise bad("stream_options must be an object", "stream_options")
    extra = sorted(set(opts) - {"include_usage"})
    if extra:
        raise bad(f"unknown field stream_options.{extra[0]}", f"stream_options.{extra[0]}", "unknown_parameter")
    return stream, bool(_boolean(opts, "include_usage"))


# -- chat messages ------------------------------------------------------------------------------------------------
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# keys an assistant message handed back from a previous response may carry, each harmless when null / empty
ECHOED = {"refusal", "tool_calls", "function_call", "audio", "annotations", "name"}


def _content(content, where: str) -> str:
    """A message's text: a string, or a list of text parts (joined by newlines)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"{where} must be a string or a list of content parts", where)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or "type" not in part:
            raise bad(f"{where}[{j}] must be an object with a type", f"{where}[{j}]")
        if part["type"] != "text":
            raise unsupported(f"{where}[{j}]", f"content of type {str(part['type'])[:40]!r} (only text)")
        if not isinstance(part.get("text"), str) or set(part) - {"type", "text"}:
            raise bad(f'{where}[{j}] must be {{"type": "text", "text": "..."}}', f"{where}[{j}]")
        texts.append(part["text"])
    return "\n".join(texts)


def _message(i: int, m) -> dict[str, str]:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise bad(f"{where} must be an object with a role and a content", where)
    role = m.get("role")
    if role not in ROLES:
        if role in ("tool", "function"):
            raise unsupported(f"{where}.role", f"a {role} message (tool calling)")
        raise bad(f"{where}.role must be one of {', '.join(ROLES)}, got {json.dumps(role)[:40]}", f"{where}.role")
    for key, v in m.items():
        if key in ("role", "content"):
            continue
        if key not in ECHOED:
            raise bad(f"unknown field {where}.{key}", f"{where}.{key}", "unknown_parameter")
        if v not in (None, [], ""):
            raise unsupported(f"{where}.{key}", f"{key} in a message")
    if m.get("content") is None:
        raise bad(f"{where}.content is missing", f"{where}.content")
    return {"role": ROLES[role], "content": _content(m["content"], f"{where}.content")}


def parse_chat(body: dict) -> ChatRequest:
    """POST /v1/chat/completions' body, checked."""
    _check_fields(body, CHAT_INERT, {"messages", "max_completion_tokens"})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list", "messages")
    stream, usage = _streaming(body)
    return ChatRequest(
        messages=[_message(i, m) for i, m in enumerate(messages)],
        sampling=_sampling(body, "max_completion_tokens"),
        stream=stream,
        include_usage=usage,
    )


def _prompt(v) -> str | list[int]:
    """A completion prompt: text or token ids; a batch of one is taken, a larger batch is n > 1."""
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (str, list)):
        v = v[0]
    if isinstance(v, str):
        return v
    if isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        return list(v)
    if isinstance(v, list) and len(v) > 1 and all(isinstance(p, (str, list)) for p in v):
        raise unsupported("prompt", "a batch of several prompts")
    raise bad("prompt must be a string or a list of token ids", "prompt")


def parse_completion(body: dict) -> CompletionRequest:
    """POST /v1/completions' body, checked."""
    _check_fields(body, COMPLETION_INERT, {"prompt"})
    if body.get("prompt") is None:
        raise bad("prompt is missing", "prompt")
    stream, usage = _streaming(body)
    return CompletionRequest(
        prompt=_prompt(body["prompt"]), sampling=_sampling(body), stream=stream, include_usage=usage
    )


def parse_json(raw: bytes) -> dict:
    """A request body as a JSON object."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("the request body is not UTF-8") from None
    except ValueError as e:
        raise bad(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    return body
