"""Sampling from logits, composed from small pieces (mlx-lm's make_sampler idea)."""

from __future__ import annotations

import numpy as np


def _check(temperature, top_k, top_p, min_p) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")


def filter_probs(
    logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(candidate ids, their probabilities) after temperature, top-k, top-p and min-p, as llama.cpp orders them."""
    z = logits.astype(np.float64) / temperature
    ids = np.argpartition(-z, top_k - 1)[:top_k] if 0 < top_k < z.size else np.arange(z.size)
    ids = ids[np.argsort(-z[ids], kind="stable")]
    p = np.exp(z[ids] - z[ids[0]])
    p /= p.sum()
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), top_p) + 1)  # smallest prefix with mass >= top_p
        ids, p = ids[:keep], p[:keep]
    if min_p > 0.0:
        keep = p >= min_p * p[0]
        ids, p = ids[keep], p[keep]
    return ids, p / p.sum()


class Sampler:
    """logits[vocab] -> token id (call it). Temperature 0 is greedy; `seed` makes sampling reproducible.

    judge() is speculative decoding's acceptance rule for a token a drafter proposed with certainty (prompt
    lookup's and a greedy draft model's drafts are deterministic: q is one-hot). It samples the position as
    plain decoding would, from the same random stream, and accepts the draft when the two agree: that accepts
    with probability p(draft) = min(1, p/q), and a rejection's token is a draw from p without the draft, the
    normalised residual max(0, p - q) -- the standard rule. One draw per emitted token either way, so with the
    same seed (and the exact logits the integer kernels give) speculation emits the very tokens plain sampling
    does. Greedy accepts the argmax only.
    """

    def __init__(self, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, seed=None):
        _check(temperature, top_k, top_p, min_p)
        self.temperature, self.top_k, self.top_p, self.min_p = temperature, top_k, top_p, min_p
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature == 0:
            return int(np.argmax(logits))
        ids, p = filter_probs(logits, self.temperature, self.top_k, self.top_p, self.min_p)
        return int(ids[self.rng.choice(len(ids), p=p)])

    def judge(self, logits: np.ndarray, drafted: int) -> tuple[bool, int]:
        """(accepted, the token at this position): `drafted` itself, or what replaces it."""
        token = self(logits)
        return token == drafted, token


def make_sampler(
    temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, seed: int | None = None
) -> Sampler:
    """A Sampler: a function logits[vocab] -> token id, with the speculative acceptance rule beside it."""
    return Sampler(temperature, top_k, top_p, min_p, seed)


def apply_repetition_penalty(logits: np.ndarray, recent_ids, penalty: float) -> None:
    """In place, as transformers does: a seen token's positive logit is divided, a negative one multiplied."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    ids = np.unique(np.asarray(list(recent_ids), dtype=np.int64))
    if ids.size:
        v = logits[ids]
        logits[ids] = np.where(v > 0, v / penalty, v * penalty)
