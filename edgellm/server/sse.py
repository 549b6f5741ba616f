"""OpenAI's response objects, and server-sent-event framing for the streamed ones.

A streamed chat is: a chunk with the assistant role, one per piece of text, one with the finish_reason (and an
empty delta), with stream_options.include_usage one more with empty choices and the usage, then `data: [DONE]`.
Every chunk of one response shares its id, created time and model.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field

from ..generate.generate import Stats

DONE = b"data: [DONE]\n\n"
PING = b": waiting\n\n"  # an SSE comment: keeps proxies from closing a stream that waits in the queue


def event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage(stats: Stats | None) -> dict:
    s = stats or Stats()
    return {
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.generated_tokens,
        "total_tokens": s.prompt_tokens + s.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
    }


@dataclass
class Response:
    """The fields every object of one response shares."""

    model: str
    prefix: str  # "chatcmpl" or "cmpl"
    include_usage: bool = False  # streamed: every chunk has "usage": null, then a last chunk holds it
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = self.id or f"{self.prefix}-{secrets.token_hex(12)}"

    def _head(self, object_: str) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model}

    # -- chat ---------------------------------------------------------------------------------------------
    def chat(self, text: str, finish_reason: str | None, stats: Stats | None) -> dict:
        return {
            **self._head("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage(stats),
        }

    def chat_chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._chunk("chat.completion.chunk", choice)

    # -- completions ------------------------------------------------------------------------------------------
    def completion(self, text: str, finish_reason: str | None, stats: Stats | None) -> dict:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**self._head("text_completion"), "choices": [choice], "usage": usage(stats)}

    def completion_chunk(self, text: str, finish_reason: str | None = None) -> bytes:
        return self._chunk(
            "text_completion", {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        )

    # -- both -----------------------------------------------------------------------------------------------
    def _chunk(self, object_: str, choice: dict) -> bytes:
        obj = {**self._head(object_), "choices": [choice]}
        if self.include_usage:
            obj["usage"] = None
        return event(obj)

    def usage_chunk(self, object_: str, stats: Stats | None) -> bytes:
        return event({**self._head(object_), "choices": [], "usage": usage(stats)})
