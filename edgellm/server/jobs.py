"""A checked request -> the Model's stream, ready for the worker: prompt tokens counted, max_tokens bounded.

Everything that can refuse a request runs here, before it queues, so a refusal is an HTTP status and never a
stream cut short: the prompt must leave room in the context, max_tokens must fit what it leaves, and Model's
own argument checks run at the stream() / chat(stream=True) call (which does not take the Model's lock; the
worker's first next() does).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..chat.conversation import encode_chat
from ..errors import EdgeLLMError
from ..generate.lock import LockedStream
from ..generate.params import clean_messages, clean_text
from .config import ServerConfig
from .schema import ChatRequest, CompletionRequest, RequestError, Sampling, bad


@dataclass
class Prepared:
    """A request the model will run: its stream (not started), the prompt's length and the bounded max_tokens."""

    chunks: LockedStream
    prompt_tokens: int
    max_tokens: int


class Jobs:
    """Turns checked requests into Model streams for one model and the server's settings."""

    def __init__(self, model, config: ServerConfig):
        self.model, self.config = model, config
        # resolved once: a bad --chat-template fails at start-up, and its notice (e.g. "plain") is said once
        self.template = model.chat_template(config.chat_template, _note)

    @property
    def context(self) -> int:
        return self.model.state.context

    def chat(self, req: ChatRequest) -> Prepared:
        messages = clean_messages(req.messages)  # JSON can carry lone surrogates, which the tokenizer refuses
        ids = encode_chat(self.template, self.model.tokenizer, messages)
        max_tokens = self._max_tokens(len(ids), req.sampling, "messages")
        # Model.chat renders the same ids again; the bound above leaves its fit_chat nothing to drop
        chunks = _call(
            lambda: self.model.chat(
                messages,
                stream=True,
                chat_template=self.config.chat_template,
                on_notice=_note,
                **req.sampling.kwargs(max_tokens, self.config.speculative),
            )
        )
        return Prepared(chunks, len(ids), max_tokens)

    def completion(self, req: CompletionRequest) -> Prepared:
        ids = self._prompt_ids(req.prompt)
        max_tokens = self._max_tokens(len(ids), req.sampling, "prompt")
        chunks = _call(lambda: self.model.stream(ids, **req.sampling.kwargs(max_tokens, self.config.speculative)))
        return Prepared(chunks, len(ids), max_tokens)

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.model.tokenizer.encode(clean_text(prompt, "the prompt"))
        vocab = self.model.config.vocab_size
        wrong = next((t for t in prompt if not 0 <= t < vocab), None)
        if wrong is not None:
            raise bad(f"token id {wrong} is outside the vocabulary (0..{vocab - 1})", "prompt")
        return prompt

    def _max_tokens(self, prompt_tokens: int, sampling: Sampling, prompt_param: str) -> int:
        """The request's max_tokens, or by default what the context leaves (up to --max-tokens)."""
        room = self.context - prompt_tokens  # the last position must stay free for the first generated token
        if room < 1:
            raise bad(
                f"the prompt is {prompt_tokens} tokens; this model's context holds {self.context}, with room for "
                "a reply: shorten the prompt (or start the server with a larger --context)",
                prompt_param,
                "context_length_exceeded",
            )
        if sampling.max_tokens is None:
            return min(room, self.config.max_tokens)
        if sampling.max_tokens > room:
            raise bad(
                f"max_tokens is {sampling.max_tokens}, but the context of {self.context} tokens leaves {room} after "
                f"the {prompt_tokens}-token prompt",
                "max_tokens",
                "context_length_exceeded",
            )
        return sampling.max_tokens


def _call(make) -> LockedStream:
    """The Model's stream; its own checks (e.g. speculative=True on f32 weights) become a 400."""
    try:
        return make()
    except EdgeLLMError as e:
        raise RequestError(400, str(e)) from None


def _note(text: str) -> None:
    print(f"edgellm: note: {text}", file=sys.stderr, flush=True)
