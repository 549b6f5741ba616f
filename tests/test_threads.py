"""ThreadTuner: the decode thread count follows what is fastest now, and probing costs little when steady."""

from __future__ import annotations

import numpy as np

from edgellm.kernels.parallel import FixedThreads, ThreadTuner, using_threads


def _run(tuner: ThreadTuner, cost, passes: int, rng) -> list[int]:
    """Drive the tuner for `passes` decode passes; cost(n) gives a pass's seconds at n threads."""
    chosen = []
    for _ in range(passes):
        n = tuner.decode_threads()
        chosen.append(n)
        tuner.record(n, cost(n) * (1 + 0.05 * rng.standard_normal()))
    return chosen


def test_tuner_keeps_the_fastest_count_and_probes_rarely_when_steady():
    rng = np.random.default_rng(0)
    t = ThreadTuner(2)
    assert t.choices == [1, 2]
    quiet = {1: 0.040, 2: 0.025}.get  # two threads pay off on an idle device
    chosen = _run(t, quiet, 2000, rng)
    assert t.current == 2
    late = chosen[200:]
    assert late.count(1) / len(late) < 0.02  # probes of the slower count, once the gaps have grown
    assert t.gap == ThreadTuner.MAX_GAP


def test_tuner_switches_when_another_process_takes_a_core_and_back_when_it_leaves():
    rng = np.random.default_rng(1)
    t = ThreadTuner(2)
    _run(t, {1: 0.040, 2: 0.025}.get, 1000, rng)
    assert t.current == 2
    busy = {1: 0.060, 2: 0.150}.get  # a busy core: a descheduled worker stalls every join
    chosen = _run(t, busy, 1200, rng)
    assert t.current == 1
    # it notices at the next probe (at most MAX_GAP passes later) and then stays
    first = next(i for i, n in enumerate(chosen) if n == 1 and all(c == 1 for c in chosen[i + 1 : i + 10]))
    assert first <= ThreadTuner.MAX_GAP + 2 * (ThreadTuner.PROBE + 1)
    assert chosen[-300:].count(2) / 300 < 0.05
    chosen = _run(t, {1: 0.040, 2: 0.025}.get, 1200, rng)
    assert t.current == 2
    assert chosen[-300:].count(1) / 300 < 0.05


def test_tuner_with_more_cores_tries_one_less_and_first_pass_after_a_change_is_not_counted():
    t = ThreadTuner(4)
    assert t.choices == [1, 3, 4]
    calls = []
    cost = {1: 0.08, 3: 0.03, 4: 0.05}  # one core busy: all-but-one wins

    def timed(n):
        calls.append(n)
        # the pass after a change pays a huge wake-up: counting it would make every change look bad
        return cost[n] * (50 if len(calls) > 1 and calls[-2] != n else 1)

    worst = {}
    for _ in range(600):
        n = t.decode_threads()
        t.record(n, timed(n))
        for c, v in t.time.items():
            worst[c] = max(worst.get(c, 0.0), v)
    assert all(worst[c] < 2 * cost[c] for c in cost), worst  # no wake-up pass ever entered a figure
    assert t.current == 3
    assert t.time[3] < t.time[4] < t.time[1]


def test_fixed_threads_and_using_threads_restore_the_callers_count():
    import numba

    f = FixedThreads(1)
    assert [f.decode_threads() for _ in range(3)] == [1, 1, 1]
    before = numba.get_num_threads()
    with using_threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def test_a_tuned_generation_equals_a_fixed_thread_one_token_for_token(stories_ellm, monkeypatch):
    """Switching thread counts between passes never changes the output (every kernel shared, switching often)."""
    import numba

    import edgellm
    from edgellm.kernels import parallel

    if numba.config.NUMBA_NUM_THREADS < 2:
        import pytest

        pytest.skip("one thread only")
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(ThreadTuner, "MIN_GAP", 1)
    monkeypatch.setattr(ThreadTuner, "MAX_GAP", 2)
    runs = {}
    for threads in (None, 2):
        with edgellm.load(stories_ellm["q4"], threads=threads) as m:
            chosen = []
            if threads is None:
                m.session.threads = ThreadTuner(2)
                pick = m.session.threads.decode_threads

                def recording(pick=pick, chosen=chosen):
                    chosen.append(pick())
                    return chosen[-1]

                m.session.threads.decode_threads = recording
            runs[threads] = [c.token for c in m.stream("Once upon a time", max_tokens=60)]
            if threads is None:
                assert set(chosen) == {1, 2}  # the tuned run really switched
    assert runs[None] == runs[2]


def _blas_limit() -> set[int]:
    from threadpoolctl import ThreadpoolController

    return {lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers}


def test_prefill_holds_blas_at_one_thread_while_it_runs_from_any_thread(stories_ellm, monkeypatch):
    """While a prefill product runs BLAS's own pool is held at one thread, also when two Models prefill from
    two non-main threads at once (threadpoolctl would ignore those threads), and the process's limit is back
    once the last has finished. An f16 file: quantized weights take the integer kernels, not BLAS."""
    import importlib
    import threading

    import pytest
    from threadpoolctl import threadpool_limits

    import edgellm
    from edgellm.kernels import parallel

    if not _blas_limit():
        pytest.skip("numpy has no BLAS that threadpoolctl can see")
    matvec = importlib.import_module("edgellm.kernels.matvec")  # the module (the package exports the function)
    seen: list[set[int]] = []
    rows = matvec._matmul_rows

    def watching(*args):
        seen.append(_blas_limit())
        return rows(*args)

    monkeypatch.setattr(matvec, "_matmul_rows", watching)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)  # every product on the prefill pool's threads
    with threadpool_limits(3, user_api="blas"):
        models = [edgellm.load(stories_ellm["f16"]) for _ in range(2)]
        go = threading.Barrier(2)

        def prefill(m):
            go.wait()
            for _ in range(3):
                m.generate("Once upon a time there was a little girl", max_tokens=2)

        workers = [threading.Thread(target=prefill, args=(m,)) for m in models]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for m in models:
            m.close()
        assert len(seen) > 20 and all(s == {1} for s in seen)
        assert _blas_limit() == {3}


def test_a_clearly_slower_probe_is_abandoned_after_one_timed_pass():
    """With a busy core, probing two threads again costs the untimed pass and one timed pass, not four."""
    rng = np.random.default_rng(3)
    t = ThreadTuner(2)
    busy = {1: 0.040, 2: 0.120}.get
    chosen = _run(t, busy, 3000, rng)
    assert t.current == 1
    late = chosen[100:]
    runs = [len(r) for r in "".join(str(c) for c in late).split("1") if r]  # consecutive passes at 2 threads
    assert runs and max(runs) == 2  # the untimed pass, then the one that showed it slow
