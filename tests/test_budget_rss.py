"""The RAM budget is a promise: peak RSS of a child process minus its measured baseline stays within it."""

from __future__ import annotations

import os

import pytest
from conftest import synthetic_ellm

from edgellm.bench.runner import run_child

# Allocator and interpreter slack above the plan: Python objects per token, glibc arenas of the decode and
# prefetch threads. Documented in the README; the plan itself must fit the budget exactly.
SLACK = 24 << 20


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return synthetic_ellm(
        tmp_path_factory.mktemp("rss"),
        quant="q8",
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=4,
        vocab_size=8192,
        max_position_embeddings=512,
    )


@pytest.mark.parametrize("fraction", ["minimum", 0.5, 0.7, 0.9])
def test_peak_rss_within_budget(model_file, fraction):
    """At the minimum workable budget everything streams, the head too (in row blocks, its scales resident)."""
    import edgellm

    size = os.path.getsize(model_file)
    assert size > 150e6
    if fraction == "minimum":
        budget = edgellm.plan(model_file, context=256, ram_budget=1000).minimum_budget
    else:
        budget = int(size * fraction)
    r = run_child(
        {"model": str(model_file), "budget": budget, "gen_tokens": 6, "prompt_tokens": 40, "context": 256, "threads": 2}
    )
    assert "error" not in r, r
    assert r["streamed"], "the budget should force streaming"
    assert r["plan_total"] <= budget
    if fraction == "minimum":
        assert max(r["streamed"]) == 12  # the head (unit num_hidden_layers) streams
    print(
        f"budget {budget / 1e6:.0f} MB: RSS over baseline {r['rss_over_baseline'] / 1e6:.0f} MB "
        f"(plan {r['plan_total'] / 1e6:.0f} MB, baseline {r['baseline_rss'] / 1e6:.0f} MB)"
    )
    assert r["rss_over_baseline"] <= budget + SLACK
