"""The token loop (mlx-lm's generate_step): the KV cache's session, and an iterator of sampled token ids.

Text comes one layer up (stream.py: stream_text), joined text one more (Model.generate)."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import EdgeLLMError, InvalidArgumentError
from ..kernels import blas, default_threads
from ..kernels.parallel import ThreadTuner, using_threads
from .draft import Drafter, DraftModel, PromptLookup
from .sampling import Sampler, apply_repetition_penalty, make_sampler

NO_LOGITS = np.zeros(1, np.float32)  # an empty prompt's "distribution": token 0, as argmax(None) gave
WARMUP_PASSES = 1  # plain passes after load whose time does not price a drafted token (cold caches, tuning)
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
    passes: int = 0  # decode forward passes (the prefill not counted)
    drafted: int = 0  # tokens speculative decoding drafted
    accepted: int = 0  # drafted tokens the model agreed with (each one a token without a pass of its own)

    @property
    def prompt_tps(self) -> float:
        return (self.prompt_tokens - self.cached_tokens) / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        return (self.generated_tokens - 1) / self.decode_seconds if self.decode_seconds else 0.0

    @property
    def tokens_per_pass(self) -> float:
        """Generated tokens after the first, per decode pass (1.0 without speculation)."""
        return (self.generated_tokens - 1) / self.passes if self.passes else 0.0

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(prompt_tps=self.prompt_tps, decode_tps=self.decode_tps, tokens_per_pass=self.tokens_per_pass)
        return d


class PassState(Protocol):
    """What the token loop reads of a forward pass's buffers (a RunState, or a cluster's PipelineState)."""

    context: int  # positions the KV cache holds
    chunk: int  # most tokens one pass carries
    blas: bool  # some matrix prefills through BLAS (a pass of several tokens is then not exact)
    logits: np.ndarray  # (vocab,) the last position's logits
    verify_logits: np.ndarray  # (VERIFY_ROWS, vocab) rows a speculative pass fills


class ForwardPass(Protocol):
    """The forward pass the session drives: a model Transformer, or a cluster's Pipeline of stages."""

    @property
    def state(self) -> PassState: ...

    def forward(
        self, tokens: np.ndarray, start_pos: int, all_logits: np.ndarray | None = None, *, prompt: bool = True
    ) -> np.ndarray: ...


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Session:
    """The KV cache's contents: which token ids it holds, so a new prompt re-uses their shared prefix.

    Invariant: `ids` names exactly the positions whose KV entries are valid. It is cut to the reused prefix
    before a pass and extended only after the pass completes, so an exception (or Ctrl-C) inside a pass leaves
    it naming what was committed before, and the next call recomputes the rest instead of reusing garbage.
    """

    def __init__(self, transformer: ForwardPass, threads=None):
        self.t = transformer
        self.ids: list[int] = []
        self.reused = 0  # prompt tokens the last prefill found already in the cache
        self.one_pass: float | None = None  # seconds a one-token decode pass takes (running), to price drafts
        self.timed = 0  # decode passes timed; the first one after load warms up (measured 1.5x slower)
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

    @property
    def exact_batches(self) -> bool:
        """A pass over several tokens gives each exactly the logits decoding them one by one gives: true when
        every matrix takes the integer kernels (f32/f16 ones prefill through BLAS), so speculation is lossless."""
        return not self.t.state.blas

    def verify(self, tokens: list[int]) -> np.ndarray:
        """Feed tokens (the current one, then drafted ones) in one pass at the end of the cache and commit them
        all; returns their logits rows (a view of the run state's buffer, valid until the next pass). The caller
        rolls back what it rejects (rollback)."""
        n = self.threads.chosen()  # untimed: a verification's length varies from pass to pass
        rows = self.t.state.verify_logits[: len(tokens)]
        with using_threads(n):
            self.t.forward(np.asarray(tokens, dtype=np.int64), len(self.ids), rows)
        self.ids.extend(tokens)  # commit the pass
        return rows

    def rollback(self, n: int) -> None:
        """Forget every position from n on (their KV entries get overwritten by the next pass)."""
        del self.ids[n:]

    def step(self, token: int) -> np.ndarray:
        n = self.threads.decode_threads()
        t0 = time.perf_counter()
        with using_threads(n):
            logits = self.t.forward(np.array([token], dtype=np.int64), len(self.ids), prompt=False)
        took = time.perf_counter() - t0
        self.threads.record(n, took)
        self.timed += 1
        self.one_pass = took if self.timed <= WARMUP_PASSES + 1 else _smooth(self.one_pass, took)
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
    speculative: bool | None = None,
    draft: Session | None = None,
    stats: Stats | None = None,
) -> Iterator[tuple[int, bool]]:
    """An iterator of (token, context_full) pairs; the caller decides when to stop (EOS, stop strings...).

    `speculative`: draft tokens by prompt lookup and verify them several per pass (None: wherever it is
    lossless, i.e. session.exact_batches; True: forced, an error where it is not; False: one token a pass).
    `draft`: a draft model's session (same vocabulary, context >= this one's) drafting instead of prompt lookup.
    The output is the same either way: greedy token for token, sampling in distribution.
    The prompt and sampling settings are checked now; the prefill runs at the first next().
    """
    if len(prompt_ids) >= session.context:
        raise EdgeLLMError(
            f"prompt is {len(prompt_ids)} tokens but the context holds {session.context}; "
            f"shorten it or raise the context length"
        )
    sampler = make_sampler(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)
    if speculative and not session.exact_batches:
        raise InvalidArgumentError(
            "speculative (--speculative) needs every weight matrix quantized (q8, q4, q4a): this file's f32/f16 "
            "matrices prefill through BLAS, whose numbers differ from decode's; leave it to the default"
        )
    drafter: Drafter | None = None
    if session.exact_batches if speculative is None else speculative:
        drafter = DraftModel(draft, prompt_ids) if draft is not None else PromptLookup(prompt_ids)
    return _steps(session, list(prompt_ids), max_tokens, sampler, repetition_penalty, stats or Stats(), drafter)


def _smooth(avg: float | None, x: float, w: float = 0.3) -> float:
    return x if avg is None else (1 - w) * avg + w * x


def _room(session: Session, wanted: int) -> int:
    """Tokens a draft may have: one fewer than the tokens still wanted, the positions left, the rows a pass holds."""
    state = session.t.state
    return min(wanted, session.context - len(session.ids) - 1, state.chunk, len(state.verify_logits)) - 1


def _steps(
    session: Session,
    prompt_ids: list[int],
    max_tokens: int,
    sampler: Sampler,
    repetition_penalty: float,
    stats: Stats,
    drafter: Drafter | None = None,
) -> Iterator[tuple[int, bool]]:
    t0 = time.perf_counter()
    logits = session.prefill(prompt_ids)
    stats.prompt_tokens, stats.cached_tokens = len(prompt_ids), session.reused
    if drafter is not None:
        drafter.prepare()
    history = list(prompt_ids[-REPETITION_WINDOW:])
    t_first = None
    n, pending = 0, None  # pending: the next token, when a rejected draft already decided it
    while n < max_tokens:
        if pending is None:
            if repetition_penalty != 1.0 and logits is not None:  # None: an empty prompt, so no history either
                apply_repetition_penalty(logits, history[-REPETITION_WINDOW:], repetition_penalty)
            token = sampler(logits if logits is not None else NO_LOGITS)
        else:
            token, pending = pending, None
        now = time.perf_counter()
        if t_first is None:
            t_first = now
            stats.ttft_seconds = stats.prompt_seconds = now - t0
        n += 1
        stats.generated_tokens, stats.decode_seconds = n, now - t_first
        history.append(token)
        full = len(session.ids) + 1 >= session.context
        yield token, full
        if full or n == max_tokens:
            return
        drafts = []
        t_pass = time.perf_counter()  # a pass's cost includes its drafting
        if drafter is not None:
            drafter.extend([token])
            if session.timed > WARMUP_PASSES:  # until a warm plain pass is timed, drafts cannot be priced
                drafts = drafter.draft(_room(session, max_tokens - n))
        stats.passes += 1
        if not drafts:
            logits = session.step(token)
            continue
        assert drafter is not None and session.one_pass is not None  # only a drafter drafts, once priced
        base = len(session.ids)
        rows = session.verify([token, *drafts])
        cost = ((time.perf_counter() - t_pass) / session.one_pass - 1.0) / len(drafts)  # what a drafted token added
        kept = 0
        for i, d in enumerate(drafts):
            row = rows[i]
            if repetition_penalty != 1.0:
                row = row.copy()
                apply_repetition_penalty(row, history[-REPETITION_WINDOW:], repetition_penalty)
            ok, chosen = sampler.judge(row, d)
            if not ok:
                pending = chosen
                break
            kept += 1
            history.append(d)
        session.rollback(base + 1 + kept)  # the current token and the accepted drafts stay
        drafter.feedback(len(drafts), kept, cost)
        stats.drafted += len(drafts)
        stats.accepted += kept
        if pending is None:
            logits = rows[kept].copy()  # every draft accepted: the last row is the next distribution
        for j, d in enumerate(drafts[:kept]):  # d sits at position base + 1 + j, already in the cache
            n += 1
            stats.generated_tokens, stats.decode_seconds = n, time.perf_counter() - t_first
            drafter.extend([d])
            full = base + 2 + j >= session.context
            yield d, full
            if full or n == max_tokens:
                return
