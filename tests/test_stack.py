"""kernels/stack.py: a run of pinned layers in one kernel call gives the layer-by-layer pass's very bits."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import synthetic_ellm

import edgellm
from edgellm.kernels.parallel import SMALL_BATCH, using_threads

CASES = {  # shapes whose rows leave short tiles, GQA, biases (qwen2's q/k/v; llama's on every projection), tied
    "llama-gqa": dict(model_type="llama", heads=6, kv_heads=2, head_dim=16, inter=100),
    "llama-biased": dict(model_type="llama", heads=4, kv_heads=2, head_dim=16, inter=72, biases=True),
    "qwen2": dict(model_type="qwen2", tied=True, heads=4, kv_heads=2, head_dim=12, hidden=36, inter=90),
}


def _passes(m, fused: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 5-token prompt, a 21-token chunk after it (past SMALL_BATCH: a prompt's attention claims rows and
    heads, and its row phases claim runs of rows with a short last one), 6 decoded tokens, a 4-token pass over
    positions already seen (a verification): the logits of each, and the KV cache's bits."""
    tr = m.transformer
    if not fused:
        tr.provider.resident_run = lambda i: i  # every layer one by one
    try:
        vocab = m.config.vocab_size
        ids = np.random.default_rng(3).integers(3, vocab, 32)
        assert 21 > SMALL_BATCH
        rows = [tr.forward(ids[:5], 0).copy(), tr.forward(ids[5:26], 5).copy()]
        rows += [tr.forward(ids[p : p + 1], p, prompt=False).copy() for p in range(26, 32)]
        all_logits = np.zeros((4, vocab), np.float32)
        tr.forward(ids[27:31], 27, all_logits)
        s = tr.state
        kv = np.stack([s.key_cache[:, :32], s.value_cache[:, :32]])
        return np.array(rows), all_logits, kv.view(np.uint16 if kv.dtype == np.float16 else np.uint32)
    finally:
        if not fused:
            del tr.provider.resident_run


def _check(path, **load):
    with edgellm.load(path, context=32, **load) as m:
        want = _passes(m, fused=False)
        assert not m.transformer.stacks
        for threads in range(1, min(2, numba.config.NUMBA_NUM_THREADS) + 1):  # type: ignore[attr-defined]
            with using_threads(threads):
                got = _passes(m, fused=True)
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b, err_msg=f"{threads} threads")
        stacks = [s for s in m.transformer.stacks.values() if s is not None]
        assert stacks, "no run of layers went through a stack"
        return m.plan, stacks


@pytest.mark.parametrize("quant", ["q4", "q8"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_stack_gives_the_layer_by_layer_bits(case, quant, tiny_model, tmp_path):
    src = tiny_model(**CASES[case])
    path = edgellm.convert(src, tmp_path / "m.ellm", quant=quant, progress=False).path
    plan, stacks = _check(path)
    assert [(s.first, s.end) for s in stacks] == [(0, plan.n_layers)]  # all pinned: one run


def test_stories_stack_bits(stories_ellm):
    """stories260K q4: intermediate 172 leaves short last tiles."""
    _check(stories_ellm["q4"])


def test_runs_of_pinned_layers_between_streamed_ones(tmp_path):
    """At a budget that pins some layers and streams the others, each run of pinned layers goes through a stack
    of its own, with the streamed layers one by one between them: the same bits as layer by layer."""
    path = synthetic_ellm(
        tmp_path, quant="q4", hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=512, max_position_embeddings=64,
    )  # fmt: skip
    full = edgellm.plan(path, context=32).total
    lo = edgellm.plan(path, context=32, ram_budget=1000).minimum_budget
    plan, stacks = _check(path, ram_budget=lo + (full - lo) // 2)
    assert plan.streamed and [u for u in plan.pinned if u < plan.n_layers]
    assert all(set(range(s.first, s.end)) <= set(plan.pinned) for s in stacks)


def test_a_stack_shares_its_compute_time_between_its_layers(stories_ellm):
    with edgellm.load(stories_ellm["q4"], context=32) as m:
        m.generate("Once upon a time", max_tokens=4, temperature=0)
        per = m.provider.stats.per_unit
        layers = [per[u] for u in range(m.config.num_hidden_layers)]
        assert len({u["uses"] for u in layers}) == 1 and layers[0]["uses"] > 1
        assert len({round(u["compute_s"], 12) for u in layers}) == 1  # one clock, an even share each
        assert m.provider.io_stats()["compute_s"] >= sum(u["compute_s"] for u in layers) * (1 - 1e-9)


def test_f16_cache_stores_numpy_rounding():
    """The stack writes the f16 KV cache with the rounding numpy's astype gives the layer-by-layer pass."""
    from numba import njit

    from edgellm.kernels.stack import store

    @njit
    def put(x, out):
        for i in range(x.shape[0]):
            out[i] = store(x[i], out[0])

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000).astype(np.float32) * s for s in (1e-7, 1e-5, 1e-2, 1, 1e4)])
    out = np.zeros(x.shape, np.uint16)
    put(x, out)
    np.testing.assert_array_equal(out, x.astype(np.float16).view(np.uint16))
    same = np.zeros(x.shape, np.float32)
    put(x, same)
    np.testing.assert_array_equal(same, x)
