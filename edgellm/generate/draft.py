"""Drafting tokens for speculative decoding: prompt lookup (no model, no memory beyond an n-gram index), or a
small draft model of the same vocabulary.

A pass of the model over the current token plus k drafted ones reads every streamed layer once and costs
little more than a pass over one token (the integer tiles serve all tokens from one read of the weights), so
each drafted token that the model agrees with is a token for free. Prompt lookup drafts by finding the last
few tokens earlier in the prompt and the text so far and proposing what followed them there: summaries,
rewrites, code edits and answers quoting their source repeat long runs of it. A draft model guesses on open
text too, for the price of its own (pinned, small) passes.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .generate import Session

MAX_NGRAM = 3  # the longest suffix matched; shorter ones are tried when it is not found
MIN_NGRAM = 1
MAX_DRAFT = 8  # tokens drafted per pass at most
SMOOTH = 0.3  # weight of the newest pass in the running acceptance estimate
COST_WINDOW = 5  # passes whose measured cost per drafted token gives the estimate (their median): one pass
# slowed by another process (SmolLM2 streamed at 50%: a 5-token pass of 1.28 s among passes of 0.2 s) would
# otherwise price drafts at a whole pass each for the next several passes, and drafting stops on text it pays on
PROBE_EVERY = 16  # passes between one-token probes while drafting does not pay ...
MAX_PROBE_GAP = 256  # ... doubling after each probe that fails, up to this: on open text a probe pass costs
# more than the one-token pass it replaces (SmolLM2 q4 in RAM: 0.96-0.97x on open prompts with probes every 16)


class Drafter(Protocol):
    """What the token loop needs of a drafter: the text so far, proposals, and how each proposal went."""

    def extend(self, tokens) -> None:
        """Append tokens to the text the drafts continue (the prompt first, then every emitted token)."""

    def prepare(self) -> None:
        """Called once the model has read the prompt: do the prompt's work now, not inside a timed pass."""

    def draft(self, limit: int) -> list[int]:
        """At most `limit` tokens proposed to follow the text (maybe none)."""

    def feedback(self, drafted: int, accepted: int, cost: float | None = None) -> None:
        """A pass verified `drafted` tokens and kept `accepted`; `cost`: what each drafted token added to the
        pass (drafting included), as a share of a one-token pass (None: not measured)."""


class AdaptiveLength:
    """How many tokens to draft, from two running estimates: `rate`, the chance that the model agrees with
    the next drafted token (accepted / (accepted + rejections), the geometric law's estimate), and `cost`,
    what one more drafted token adds to a pass, as a share of a one-token pass (measured by the caller: ~10%
    in RAM, ~0 when the pass waits on flash, more with a draft model's own pass; the median of the last
    COST_WINDOW passes, so one pass slowed by something else does not stop the drafting). The i-th drafted
    token pays when rate^i > cost, so the draft is floor(log(cost) / log(rate)) tokens long (at most
    MAX_DRAFT); while rate <= cost nothing is drafted but a one-token probe after PROBE_EVERY passes, the gap
    doubling (up to MAX_PROBE_GAP) each time a probe is rejected, so a drafter that keeps missing fades out."""

    def __init__(self, rate: float = 0.6, cost: float = 0.1):
        self.rate = rate  # prior: most of a first draft taken
        self.costs = deque([cost], maxlen=COST_WINDOW)  # the latest measured costs (prior: a token 10% of a pass)
        self.idle = 0  # passes since the last draft
        self.gap = PROBE_EVERY  # idle passes before the next probe
        self.probing = False  # the last draft asked for was a probe

    @property
    def cost(self) -> float:
        """What one more drafted token adds to a pass: the median of the latest measured costs."""
        return statistics.median(self.costs)

    @property
    def length(self) -> int:
        """Tokens the next draft may have (0: drafting does not pay now)."""
        cost = self.cost
        if self.rate <= cost:
            return 0
        if self.rate >= 0.999 or cost <= 0.0:
            return MAX_DRAFT
        return max(1, min(MAX_DRAFT, int(math.log(cost) / math.log(self.rate))))

    def wanted(self, limit: int) -> int:
        """Tokens to draft now: the adaptive length, a one-token probe after PROBE_EVERY idle passes, or 0."""
        k = self.length
        if k == 0 and self.idle + 1 >= self.gap:
            k, self.probing = 1, True  # a probe: has the text turned predictable?
        k = min(limit, k)
        if k <= 0:
            self.idle += 1
        return max(k, 0)

    def feedback(self, drafted: int, accepted: int, cost: float | None = None) -> None:
        if not drafted:
            return
        if self.probing or accepted:  # a rejected probe widens the gap; any accepted token restores it
            self.gap = PROBE_EVERY if accepted else min(2 * self.gap, MAX_PROBE_GAP)
        self.probing = False
        trials = accepted + (accepted < drafted)  # the tokens judged: every accepted one and the first rejection
        self.rate = (1 - SMOOTH) * self.rate + SMOOTH * accepted / trials
        if cost is not None:
            self.costs.append(min(1.0, max(0.0, cost)))


class PromptLookup(AdaptiveLength):
    """Drafts continuations of `ids` (the prompt, then every emitted token, by extend()) by matching its last
    MAX_NGRAM..MIN_NGRAM tokens at their latest earlier occurrence; AdaptiveLength says how many."""

    def __init__(self, ids: list[int]):
        super().__init__()
        self.ids: list[int] = []
        # n -> {n-gram: index of the token that followed its latest occurrence}; an n-gram enters once a
        # token follows it, so the current suffix never matches itself
        self.index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(MIN_NGRAM, MAX_NGRAM + 1)}
        self.extend(ids)

    def extend(self, tokens) -> None:
        for t in tokens:
            i = len(self.ids)  # t's index: the n-grams ending just before it are now followed by it
            for n in self.index:
                if i >= n:
                    self.index[n][tuple(self.ids[i - n : i])] = i
            self.ids.append(int(t))

    def prepare(self) -> None:
        pass  # the index grows as tokens arrive

    def draft(self, limit: int) -> list[int]:
        """Up to min(limit, length) tokens that followed the longest matching suffix."""
        k = self.wanted(limit)
        if k == 0:
            return []
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(self.ids) < n:
                continue
            at = self.index[n].get(tuple(self.ids[-n:]))
            if at is not None:
                self.idle = 0
                return self.ids[at : at + k]
        self.idle += 1
        return []


class DraftModel(AdaptiveLength):
    """Drafts with a small model sharing the vocabulary: its greedy continuation of the text, from its own KV
    cache (`session`, which reuses the prefix it already holds, so each draft first catches up on the tokens
    accepted since the last one). Greedy drafts are certain (q one-hot), which keeps Sampler.judge exact."""

    def __init__(self, session: Session, ids: list[int]):
        super().__init__(cost=0.2)  # prior: a draft model's pass adds more than a lookup
        self.session = session
        self.ids = [int(t) for t in ids]

    def extend(self, tokens) -> None:
        self.ids.extend(int(t) for t in tokens)

    def prepare(self) -> None:
        self.session.prefill(self.ids)  # the prompt (its reused prefix skipped), a part of the time to first token

    def draft(self, limit: int) -> list[int]:
        k = self.wanted(limit)
        if k == 0:
            return []
        self.idle = 0
        logits = self.session.prefill(self.ids)
        out: list[int] = []
        while logits is not None and len(out) < k:
            out.append(int(np.argmax(logits)))
            logits = self.session.step(out[-1]) if len(out) < k else None
        return out
