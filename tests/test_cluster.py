"""A model pipelined over several stages (edgellm.cluster): the same bits as one process, each stage within its
budget, the split the planner promises, and one clear error when a stage dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from itertools import combinations

import numpy as np
import pytest

import edgellm
from edgellm.cluster.split import StageSpec, split_layers, stage_plan
from edgellm.cluster.stage import Stage
from edgellm.errors import BudgetError, EdgeLLMError, InvalidArgumentError

CTX = 64
PROMPT = "w3 w4 w5 w6 w3 w4 w5 w6 w3 w4"  # repeats: prompt lookup drafts from it
RSS_SLACK = 24 << 20  # as tests/test_budget_rss.py: allocator slack above the plan


@pytest.fixture(scope="module")
def q4_file(tmp_path_factory):
    from conftest import six_layer_q4

    return six_layer_q4(tmp_path_factory.mktemp("q4"))


def _model_of(path):
    from edgellm.api import _model_of
    from edgellm.format import EllmFile

    f = EllmFile(path)
    return (f, *_model_of(f))


def _reference(path, ids):
    with edgellm.load(path, context=CTX) as m:
        return m.logits(ids), m.generate(PROMPT, max_tokens=16, speculative=False)


# -- the planner and the stages, in this process (no Ray) ---------------------------------------------------


def test_split_streams_no_more_than_any_other_split(q4_file):
    """The split minimises the bytes the cluster streams per token: checked against every split of 6 layers."""
    f, module, args = _model_of(q4_file)
    with f:
        for budgets in (
            [f.size // 2] * 3,
            [f.size * 3 // 5, f.size // 2],
            [f.size // 2, f.size * 7 // 10, f.size * 3 // 5],
        ):
            specs = split_layers(f, module, args, budgets, CTX, CTX)
            assert [s.first for s in specs][0] == 0 and specs[-1].end == args.num_hidden_layers
            assert all(a.end == b.first for a, b in zip(specs, specs[1:]))
            got = sum(stage_plan(f, module, args, s).streamed_bytes_per_pass for s in specs)
            best = None
            for cuts in combinations(range(1, args.num_hidden_layers), len(budgets) - 1):
                bounds = (0, *cuts, args.num_hidden_layers)
                plans = [
                    stage_plan(f, module, args, StageSpec(i, len(budgets), a, b, budgets[i], CTX, CTX))
                    for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
                ]
                if all(p.fits for p in plans):
                    cost = sum(p.streamed_bytes_per_pass for p in plans)
                    best = cost if best is None else min(best, cost)
            assert best is not None and got == best, (budgets, got, best)
            for s in specs:
                p = stage_plan(f, module, args, s)
                assert p.fits and p.total <= s.budget
                assert (args.num_hidden_layers in p.pinned + p.streamed) == s.last_stage  # the head: last stage


def test_split_that_cannot_fit_says_so(q4_file):
    f, module, args = _model_of(q4_file)
    with f, pytest.raises(BudgetError, match="does not fit these 2 node budgets"):
        split_layers(f, module, args, [100_000, 100_000], CTX, CTX)
    with f, pytest.raises(BudgetError, match="at most 6 nodes"):
        split_layers(f, module, args, [f.size] * 7, CTX, CTX)


def test_stages_in_one_process_give_the_same_bits(q4_file):
    """Stages chained by hand (what the pipeline does over Ray): logits equal to one process's, bit for bit,
    with a stage that streams; each stage's KV cache holds only its own layers."""
    f, module, args = _model_of(q4_file)
    ids = [1, 5, 9, 33, 60, 7, 7, 2]
    ref, _ = _reference(q4_file, ids)
    with f:
        specs = split_layers(f, module, args, [f.size // 2, f.size * 3 // 5, f.size // 2], CTX, CTX)
        checksum = f.header_checksum
    stages = [Stage(s, str(q4_file), checksum) for s in specs]
    try:
        assert any(st.plan.streamed for st in stages)
        for st in stages:
            assert st.state.key_cache.shape[0] == st.spec.end - st.spec.first
        x = np.asarray(ids)
        for st in stages:
            x = st.forward(x, 0, True, True)
        np.testing.assert_array_equal(x, ref)
    finally:
        for st in stages:
            st.close()


def test_a_node_with_another_file_refuses(q4_file, tmp_path):
    other = tmp_path / "other.ellm"
    data = bytearray(open(q4_file, "rb").read())
    other.write_bytes(bytes(data))
    f, module, args = _model_of(q4_file)
    with f:
        spec = split_layers(f, module, args, [f.size], CTX, CTX)[0]
    with pytest.raises(EdgeLLMError, match=r"stage 0 on .*not the driver's file \(header checksum"):
        Stage(spec, str(other), "0" * 16)


# -- over Ray ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_local, q4_file):
    """3 stage processes, each with half the file: fixed costs (staging, slots, run state) take ~3 MB of each,
    so stages stream."""
    from edgellm.cluster.driver import load_cluster

    m = load_cluster(q4_file, cluster="local:3", node_budget="50%", context=CTX, warm=True)
    yield m
    m.close()


def test_cluster_logits_and_generation_match_one_process(cluster, q4_file):
    ids = [1, 5, 9, 33, 60, 7, 7, 2]
    ref_logits, ref_text = _reference(q4_file, ids)
    assert len(cluster.plan.specs) == 3 and cluster.plan.streamed
    np.testing.assert_array_equal(cluster.logits(ids), ref_logits)
    assert cluster.generate(PROMPT, max_tokens=16, speculative=False) == ref_text
    with cluster.stream(PROMPT, max_tokens=16, speculative=True) as chunks:
        parts = list(chunks)
    assert "".join(c.text for c in parts) == ref_text
    assert parts[-1].stats.drafted > 0  # verification passes of several tokens went through the stages


def test_cluster_chat_reuses_the_kv_cache(cluster, q4_file):
    turn = [{"role": "user", "content": "w3 w4 w5"}]
    with edgellm.load(q4_file, context=CTX) as m:
        a = m.chat(turn, max_tokens=6)
        b = m.chat(turn + [{"role": "assistant", "content": a}, {"role": "user", "content": "w6"}], max_tokens=6)
    assert cluster.chat(turn, max_tokens=6) == a
    second = turn + [{"role": "assistant", "content": a}, {"role": "user", "content": "w6"}]
    with cluster.chat(second, max_tokens=6, stream=True) as chunks:
        parts = list(chunks)
    assert "".join(c.text for c in parts) == b
    assert parts[-1].stats.cached_tokens > 0


def test_each_stage_stays_within_its_budget(cluster):
    cluster.generate(PROMPT, max_tokens=8)
    for info, spec in zip(cluster.transformer.info(), cluster.plan.specs):
        assert info.planned <= spec.budget
        over = info.peak_rss - info.baseline_rss
        assert over <= spec.budget + RSS_SLACK, (info.index, over, spec.budget)


def test_a_stage_killed_mid_generation_fails_clearly_and_a_retry_works(ray_local, q4_file):
    from edgellm.cluster.driver import load_cluster
    from edgellm.cluster.pipeline import ClusterError

    ref = edgellm.load(q4_file, context=CTX)
    want = ref.generate(PROMPT, max_tokens=16, speculative=False)
    ref.close()
    m = load_cluster(q4_file, cluster="local:2", node_budget="60%", context=CTX)
    try:
        victim = m.transformer.actors[1]
        pid = ray_local.get(victim.pid.remote())
        t0 = time.perf_counter()
        with pytest.raises(ClusterError, match=r"stage 1 \(layers \d+\.\.5\) on .* is gone") as e:
            with m.stream(PROMPT, max_tokens=16, speculative=False) as chunks:
                for n, _ in enumerate(chunks):
                    if n == 3:
                        os.kill(pid, signal.SIGKILL)
        assert time.perf_counter() - t0 < 30, "the error must come within seconds, not hang"
        assert "\n" not in str(e.value)
        assert m.session.ids == []  # the caches are treated as lost
        deadline = time.time() + 60
        while True:  # Ray restarts the stage (max_restarts); the retry recomputes the prompt there
            try:
                assert m.generate(PROMPT, max_tokens=16, speculative=False) == want
                break
            except ClusterError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        m.close()


def test_cli_cluster_flags(q4_file):
    def run(*argv):
        return subprocess.run(
            [sys.executable, "-m", "edgellm.cli.main", *argv], capture_output=True, text=True, timeout=300
        )

    r = run("run", str(q4_file), "-p", "w3", "--node-budget", "50%", "--max-tokens", "2")
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        "edgellm: error: node_budget (--node-budget) is for a cluster: give cluster= (--cluster) too"
    ]
    r = run("run", str(q4_file), "-p", "w3", "--cluster", "local:2", "--ram-budget", "50%", "--max-tokens", "2")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("edgellm: error: with a cluster")
    r = run("run", str(q4_file), "-p", "w3", "--cluster", "local:x", "--max-tokens", "2")
    assert r.returncode != 0 and "local:N takes N" in r.stderr.strip().splitlines()[-1]
    r = run("plan", str(q4_file), "--cluster", "local:2", "--node-budget", "60%", "--context", str(CTX))
    assert r.returncode == 0, r.stderr
    assert "2 stages over 6 layers" in r.stdout and "stage 1: layers" in r.stdout and "+ head" in r.stdout


def test_cli_run_on_a_local_cluster(q4_file):
    pytest.importorskip("ray")
    with edgellm.load(q4_file, context=CTX) as m:
        want = m.generate(PROMPT, max_tokens=8)
    r = subprocess.run(
        [sys.executable, "-m", "edgellm.cli.main", "run", str(q4_file), "-p", PROMPT, "--cluster", "local:2",
         "--node-budget", "60%", "--context", str(CTX), "--max-tokens", "8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n") == want.rstrip("\n")


def test_cli_bench_on_a_local_cluster(q4_file):
    pytest.importorskip("ray")
    r = subprocess.run(
        [sys.executable, "-m", "edgellm.cli.main", "bench", str(q4_file), "--cluster", "local:2", "--node-budget",
         "60%", "--prompt-tokens", "4", "--gen-tokens", "4"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert "tok/s" in out[1] and out[2].split()[:2] == ["stage", "layers"]
    rows = [line.split() for line in out[3:]]
    assert [row[0] for row in rows] == ["0", "1"] and rows[-1][1].endswith("..5")
    r = subprocess.run(
        [sys.executable, "-m", "edgellm.cli.main", "bench", str(q4_file), "--cluster", "local:2", "--sweep",
         "budget=50%,60%"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("edgellm: error: --sweep is not")


def test_bad_cluster_arguments(q4_file):
    with pytest.raises(InvalidArgumentError, match="local:N takes N"):
        from edgellm.cluster.ray_cluster import parse_address

        parse_address("local:0")
    for call in (edgellm.plan, edgellm.load):  # node_budget alone is refused, never ignored
        with pytest.raises(InvalidArgumentError, match="node_budget .* is for a cluster"):
            call(q4_file, node_budget="50%")


def test_the_server_on_a_local_cluster(stories_ellm, tmp_path):
    """`edgellm serve --cluster local:2`: a chat completion equals the model's own chat in one process."""
    pytest.importorskip("ray")
    from test_server import PROMPT as CHAT
    from test_server import TEMPLATE, Server

    model = stories_ellm["q4"]
    with edgellm.load(model) as m:
        want = m.chat(CHAT, max_tokens=16, temperature=0, chat_template=TEMPLATE)
    env = dict(os.environ, EDGELLM_CACHE=str(tmp_path))
    env.pop("EDGELLM_API_KEY", None)
    s = Server(model, "--chat-template", TEMPLATE, "--cluster", "local:2", env=env)
    try:
        r = s.client(key=None).chat.completions.create(model="x", messages=CHAT, max_tokens=16, temperature=0)
        assert r.choices[0].message.content == want and want
    finally:
        assert s.stop() == 0, s.stderr


def test_the_core_never_imports_ray(q4_file):
    code = (
        "import sys, edgellm\n"
        f"m = edgellm.load({str(q4_file)!r}, context=32)\n"
        "m.generate('w3', max_tokens=2); m.close()\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_default_context_shrinks_to_fit_the_node_budgets(tmp_path):
    """As for one process: the default context halves (with ContextReduced) while no split fits; one asked for
    is kept and the budgets refused."""
    from conftest import synthetic_ellm

    from edgellm.api import ContextReduced

    path = synthetic_ellm(
        tmp_path, quant="q4", hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=512, max_position_embeddings=2048,
    )  # fmt: skip
    fits = edgellm.plan(path, cluster="local:2", node_budget="50MB", context=512)
    assert fits.fits and fits.context == 512
    budgets = [p.total for p in fits.plans]  # what each stage needs at 512: less than at the default 2048
    with pytest.warns(ContextReduced, match="context reduced to 512"):
        p = edgellm.plan(path, cluster="local:2", node_budget=budgets)
    assert p.context == 512 and p.fits
    with pytest.raises(BudgetError, match="does not fit these 2 node budgets"):
        edgellm.plan(path, cluster="local:2", node_budget=budgets, context=2048)
