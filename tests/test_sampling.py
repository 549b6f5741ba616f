"""Sampling: greedy, seeds, top-k / top-p / min-p supports, repetition penalty, stop strings."""

from __future__ import annotations

import numpy as np
import pytest

from edgellm.generate.sampling import apply_repetition_penalty, filter_probs, make_sampler
from edgellm.generate.stops import StopMatcher

LOGITS = np.log(np.array([0.5, 0.25, 0.15, 0.07, 0.03], np.float32))


def _support(**kw) -> set[int]:
    s = make_sampler(seed=0, **kw)
    return {s(LOGITS.copy()) for _ in range(2000)}


def test_greedy_is_argmax():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert make_sampler()(x) == int(np.argmax(x))
    assert make_sampler(temperature=0.8, top_k=1, seed=3)(x) == int(np.argmax(x))


def test_seed_reproducible():
    x = np.random.default_rng(1).standard_normal(500).astype(np.float32)
    s1, s2 = make_sampler(temperature=1.0, seed=7), make_sampler(temperature=1.0, seed=7)
    draws = [s1(x) for _ in range(50)]
    assert draws == [s2(x) for _ in range(50)]
    assert len(set(draws)) > 5  # it really samples


def test_filters_keep_expected_sets():
    assert _support(temperature=1.0) == {0, 1, 2, 3, 4}
    assert _support(temperature=1.0, top_k=2) == {0, 1}
    assert _support(temperature=1.0, top_p=0.7) == {0, 1}  # 0.5 + 0.25 >= 0.7
    assert _support(temperature=1.0, top_p=0.75) == {0, 1}
    assert _support(temperature=1.0, top_p=0.76) == {0, 1, 2}
    assert _support(temperature=1.0, min_p=0.2) == {0, 1, 2}  # keeps p >= 0.1
    ids, p = filter_probs(LOGITS, 1.0, top_k=3)
    np.testing.assert_allclose(p, np.array([0.5, 0.25, 0.15]) / 0.9, rtol=1e-5)
    assert list(ids) == [0, 1, 2]


def test_temperature_sharpens():
    ids, p_hot = filter_probs(LOGITS, 2.0)
    _, p_cold = filter_probs(LOGITS, 0.5)
    assert p_cold[0] > 0.5 > p_hot[0]


@pytest.mark.parametrize("kw", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(min_p=2), dict(top_k=-1)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        make_sampler(**kw)


def test_repetition_penalty_hf_semantics():
    x = np.array([2.0, -2.0, 1.0, 0.5], np.float32)
    apply_repetition_penalty(x, [0, 1, 1], 2.0)
    assert list(x) == [1.0, -4.0, 1.0, 0.5]


def test_stop_matcher_across_chunks():
    m = StopMatcher(["</end>", "STOP"])
    out = []
    for piece in ["Hello </", "en", "d> never"]:
        text, stopped = m.feed(piece)
        out.append(text)
        if stopped:
            break
    assert "".join(out) == "Hello " and stopped
    m = StopMatcher(["STOP"])
    assert m.feed("ST") == ("", False)  # could start a stop string: held back
    assert m.feed("ILL") == ("STILL", False)
    assert m.feed("S") == ("", False)
    assert m.flush() == "S"
