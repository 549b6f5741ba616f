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
