"""The text stream (mlx-lm's stream_generate): token ids become text chunks, cut at stop strings, with stats.

One Chunk per generated token, in order. Its text is what that token made printable, possibly "" (a partial
UTF-8 character the detokenizer holds back, or a tail that could start a stop string). The last chunk carries
the last generated token (an end-of-turn token included), the text still held back, finish_reason and stats.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..interrupts import checkpoint
from ..tokenizer import StreamingDetokenizer
from .generate import Session, Stats, generate_tokens, peak_rss_bytes
from .params import check_int
from .stops import StopMatcher


@dataclass
class Chunk:
    text: str
    token: int | None  # the generated token this text came from (None: no token generated)
    finish_reason: str | None = None  # "stop" (EOS or stop string), "length" (max tokens or context)
    stats: Stats | None = None


def stream_text(
    session: Session,
    tokenizer,
    prompt_ids: list[int],
    *,
    max_tokens: int = 256,
    stop=None,
    end_ids=None,
    weights=None,
    **sampling,
) -> Iterator[Chunk]:
    """An iterator of Chunks continuing `prompt_ids`. Generation ends at `max_tokens`, a full context, a token
    in `end_ids` (default: the tokenizer's EOS ids) or a `stop` string (one or a list; the text ends before it).
    `weights`, the weight provider, reports bytes read and I/O stats; `sampling` goes to generate_tokens.

    Arguments and the prompt are checked now; the prefill runs at the first next()."""
    check_int("max_tokens", max_tokens, 0)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    end_ids = set(tokenizer.eos_ids if end_ids is None else end_ids)
    stats = Stats()
    steps = generate_tokens(session, prompt_ids, max_tokens=max_tokens, stats=stats, **sampling)
    return _chunks(steps, StreamingDetokenizer(tokenizer), StopMatcher(stops), end_ids, max_tokens, stats, weights)


def _chunks(
    steps, detok: StreamingDetokenizer, matcher: StopMatcher, end_ids: set, max_tokens: int, stats: Stats, weights
) -> Iterator[Chunk]:
    read0 = getattr(weights, "bytes_read", 0)
    token, finish, stopped = None, "length", False
    for n, (token, full) in enumerate(steps, 1):
        if token in end_ids:  # an end token ends the text and has none of its own
            text, finish = "", "stop"
            break
        detok.add_token(token)
        text, stopped = matcher.feed(detok.last_segment)
        if stopped or full or n == max_tokens:
            break  # the last token: its text goes into the last chunk
        yield Chunk(text, token)
        checkpoint()  # a Ctrl-C the edgellm command put off while kernels compiled stops the text here
    else:  # no token at all (max_tokens=0)
        text = ""
    if stopped:
        finish = "stop"
    else:  # flush what the detokenizer and the stop matcher still hold back
        detok.finalize()
        tail, stopped = matcher.feed(detok.last_segment)
        text += tail if stopped else tail + matcher.flush()
        finish = "stop" if stopped else finish
    stats.peak_rss_bytes = peak_rss_bytes()
    stats.bytes_read = getattr(weights, "bytes_read", 0) - read0
    stats.io = weights.io_stats() if hasattr(weights, "io_stats") else {}
    yield Chunk(text, token, finish, stats)
