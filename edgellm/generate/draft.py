"""Drafting tokens for speculative decoding: prompt lookup (no model, no memory beyond an n-gram index).

A pass of the model over the current token plus k drafted ones reads every streamed layer once and costs
little more than a pass over one token (the integer tiles serve all tokens from one read of the weights), so
each drafted token that the model agrees with is a token for free. Prompt lookup drafts by finding the last
few tokens earlier in the prompt and the text so far and proposing what followed them there: summaries,
rewrites, code edits and answers quoting their source repeat long runs of it.
"""

from __future__ import annotations

import math

MAX_NGRAM = 3  # the longest suffix matched; shorter ones are tried when it is not found
MIN_NGRAM = 1
MAX_DRAFT = 8  # tokens drafted per pass at most
SMOOTH = 0.3  # weight of the newest pass in the running acceptance and cost estimates
PROBE_EVERY = 16  # passes between one-token probes while drafting does not pay


class PromptLookup:
    """Drafts continuations of `ids` (the prompt, then every emitted token, by extend()) by matching its last
    MAX_NGRAM..MIN_NGRAM tokens at their latest earlier occurrence.

    How many tokens to draft follows from two running estimates: `rate`, the chance that the model agrees
    with the next drafted token (accepted / (accepted + rejections), the geometric law's estimate), and
    `cost`, what one more token adds to a pass, as a share of a one-token pass (measured by the caller:
    ~10% in RAM, ~0 when the pass waits on flash). The i-th drafted token pays when rate^i > cost, so the
    draft is floor(log(cost) / log(rate)) tokens long (at most MAX_DRAFT); while rate <= cost nothing is
    drafted but a one-token probe every PROBE_EVERY passes, so on open-ended text drafting fades out."""

    def __init__(self, ids: list[int]):
        self.ids: list[int] = []
        # n -> {n-gram: index of the token that followed its latest occurrence}; an n-gram enters once a
        # token follows it, so the current suffix never matches itself
        self.index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(MIN_NGRAM, MAX_NGRAM + 1)}
        self.rate, self.cost = 0.6, 0.1  # priors: most of a first draft taken, a token 10% of a pass
        self.idle = 0  # passes since the last draft
        self.extend(ids)

    @property
    def length(self) -> int:
        """Tokens the next draft may have (0: drafting does not pay now)."""
        if self.rate <= self.cost:
            return 0
        if self.rate >= 0.999 or self.cost <= 0.0:
            return MAX_DRAFT
        return max(1, min(MAX_DRAFT, int(math.log(self.cost) / math.log(self.rate))))

    def extend(self, tokens) -> None:
        for t in tokens:
            i = len(self.ids)  # t's index: the n-grams ending just before it are now followed by it
            for n in self.index:
                if i >= n:
                    self.index[n][tuple(self.ids[i - n : i])] = i
            self.ids.append(int(t))

    def draft(self, limit: int) -> list[int]:
        """Up to min(limit, length) tokens that followed the longest matching suffix."""
        k = self.length
        if k == 0 and self.idle + 1 >= PROBE_EVERY:
            k = 1  # a probe: has the text turned repetitive?
        k = min(limit, k)
        if k <= 0:
            self.idle += 1
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

    def feedback(self, drafted: int, accepted: int, cost: float | None = None) -> None:
        """A pass verified `drafted` tokens and kept `accepted` of them; `cost`: what each drafted token added
        to that pass, as a share of a one-token pass (None: not measured)."""
        if not drafted:
            return
        trials = accepted + (accepted < drafted)  # the tokens judged: every accepted one and the first rejection
        self.rate = (1 - SMOOTH) * self.rate + SMOOTH * accepted / trials
        if cost is not None:
            self.cost = (1 - SMOOTH) * self.cost + SMOOTH * min(1.0, max(0.0, cost))
