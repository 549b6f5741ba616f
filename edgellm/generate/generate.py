"""The token loop (mlx-lm's generate_step): the KV cache's session, and an iterator of sampled token ids.

Text comes one layer up (stream.py: stream_text), joined text one more (Model.generate)."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import EdgeLLMError
from ..kernels import blas, default_threads
from ..kernels.parallel import ThreadTuner, using_threads
from .sampling import apply_repetition_penalty, make_sampler

REPETITION_WINDOW = 64  # recent tokens the repetition penalty looks at (llama.cpp's default)


@dataclass
class Stats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV entries were reused
    generated_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0  # after the first generated token
    ttft_seconds: float = 0.0  # time to first token
    peak_rss_bytes: int = 0
    bytes_read: int = 0
    io: dict = field(default_factory=dict)  # streaming runtime detail (read/decompress/wait seconds...)

    @property
    def prompt_tps(self) -> float:
        return (self.prompt_tokens - self.cached_tokens) / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        return (self.generated_tokens - 1) / self.decode_seconds if self.decode_seconds else 0.0

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(prompt_tps=self.prompt_tps, decode_tps=self.decode_tps)
        return d


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Session:
    """The KV cache's contents: which token ids it holds, so a new prompt re-uses their shared prefix.

    Invariant: `ids` names exactly the positions whose KV entries are valid. It is cut to the reused prefix
    before a pass and extended only after the pass completes, so an exception (or Ctrl-C) inside a pass leaves
    it naming what was committed before, and the next call recomputes the rest instead of reusing garbage.
    """

    def __init__(self, transformer, threads=None):
        self.t = transformer
        self.ids: list[int] = []
        self.reused = 0  # prompt tokens the last prefill found already in the cache
        # thread count per pass: all of them for prefill, tuned per decode pass unless the caller fixed it
        self.threads = threads or ThreadTuner(default_threads())

    @property
    def context(self) -> int:
        return self.t.state.context

    def prefill(self, ids: list[int], all_logits: np.ndarray | None = None) -> np.ndarray | None:
        """Make the cache hold `ids`; returns the last position's logits (None for no ids). Reuses the common
        prefix, except with `all_logits` (len(ids), vocab), which is filled for every position from an empty cache."""
        keep = 0
        if all_logits is None:
            while keep < min(len(ids) - 1, len(self.ids)) and ids[keep] == self.ids[keep]:
                keep += 1
        del self.ids[keep:]  # from here on the entries past `keep` get overwritten
        self.reused = keep
        chunk = self.t.state.chunk
        logits = None
        with blas.one_thread():  # held over the whole prefill: giving it back between products costs ~10%
            for start in range(keep, len(ids), chunk):
                part = np.asarray(ids[start : start + chunk], dtype=np.int64)
                rows = all_logits[start : start + len(part)] if all_logits is not None else None
                with using_threads(self.threads.most):
                    logits = self.t.forward(part, start, rows)
                self.ids.extend(part.tolist())  # commit the pass (one list call: Ctrl-C cannot split it)
        return logits

    def step(self, token: int) -> np.ndarray:
        n = self.threads.decode_threads()
        t0 = time.perf_counter()
        with using_threads(n):
            logits = self.t.forward(np.array([token], dtype=np.int64), len(self.ids), prompt=False)
        self.threads.record(n, time.perf_counter() - t0)
        self.ids.append(token)  # commit the pass
        return logits


def generate_tokens(
    session: Session,
    prompt_ids: list[int],
    *,
    max_tokens: int,
    temperature=0.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    repetition_penalty=1.0,
    seed=None,
    stats: Stats | None = None,
) -> Iterator[tuple[int, bool]]:
    """An iterator of (token, context_full) pairs; the caller decides when to stop (EOS, stop strings...).

    The prompt and sampling settings are checked now; the prefill runs at the first next().
    """
    if len(prompt_ids) >= session.context:
        raise EdgeLLMError(
            f"prompt is {len(prompt_ids)} tokens but the context holds {session.context}; "
            f"shorten it or raise the context length"
        )
    sampler = make_sampler(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)
    return _steps(session, list(prompt_ids), max_tokens, sampler, repetition_penalty, stats or Stats())


def _steps(
    session: Session, prompt_ids: list[int], max_tokens: int, sampler, repetition_penalty: float, stats: Stats
) -> Iterator[tuple[int, bool]]:
    t0 = time.perf_counter()
    logits = session.prefill(prompt_ids)
    stats.prompt_tokens, stats.cached_tokens = len(prompt_ids), session.reused
    history = list(prompt_ids[-REPETITION_WINDOW:])
    t_first = None
    for n in range(max_tokens):
        if repetition_penalty != 1.0 and logits is not None:  # None: an empty prompt, so no history either
            apply_repetition_penalty(logits, history[-REPETITION_WINDOW:], repetition_penalty)
        token = int(sampler(logits))
        now = time.perf_counter()
        if t_first is None:
            t_first = now
            stats.ttft_seconds = stats.prompt_seconds = now - t0
        stats.generated_tokens = n + 1
        stats.decode_seconds = now - t_first
        history.append(token)
        full = len(session.ids) + 1 >= session.context
        yield token, full
        if full or n + 1 == max_tokens:
            return
        logits = session.step(token)
