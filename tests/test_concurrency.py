"""One Model shared by threads and by interleaved stream() iterators: calls are serialized, a second call from a
thread that holds an unfinished iterator raises ModelBusyError, and an exception, Ctrl-C or an abandoned
iterator leaves Session.ids naming exactly what the KV cache holds.

Reference answers come from models that saw the same calls one at a time. A call that reuses the KV cache is not
bit-identical to one that does not (a one-token pass and a chunked prefill round differently), so where a test
compares against a fresh model it either makes no prefix reusable (prompts without BOS whose first tokens all
differ) or replays the same cache history on the reference model.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgellm
import edgellm.api
from edgellm.errors import EdgeLLMError, ModelBusyError

# first tokens all differ, so no call can reuse another's cache: every answer is independent of call order
TEXTS = [
    "Once upon a time",
    "Lily saw a",
    "Tom was sad",
    "A big bird",
    "One day",
    "Sue had a",
    "Ben and Mia",
    "She loved",
    "He said",
    "It was a",
    "Mom gave",
    "The dog ran",
]
LONG = "Once upon a time, there was a little girl named Lily. She loved to play"  # 21 tokens with BOS
CHUNK = 4
WAIT = 120  # seconds: a safety net so a broken lock fails instead of hanging, not a speed limit


@pytest.fixture(scope="module")
def path(stories_ellm):
    return stories_ellm["q4"]


def load(path, **kw):
    # one compute thread: numba's parallel pool collapses when another process loads the cores
    return edgellm.load(path, threads=1, **kw)


@pytest.fixture(scope="module")
def prompts(path):
    with load(path) as m:
        ids = [m.tokenizer.encode(t, add_bos=False) for t in TEXTS]
    assert len({p[0] for p in ids}) == len(ids)
    return ids


def fresh(path, call):
    """What `call(model)` returns on a newly loaded model."""
    with load(path) as m:
        return call(m)


def calls_for(worker: int, prompts) -> list[tuple[list[int], dict]]:
    # 3 calls per worker: different prompts, greedy and seeded sampling
    return [
        (prompts[3 * worker + j], dict(max_tokens=24, temperature=0.8 * (j % 2), seed=10 * worker + j))
        for j in range(3)
    ]


# -- (a) threads share one model ------------------------------------------------------------------------
def test_threads_generating_on_one_model_match_serial(path, prompts):
    want = {
        (w, j): fresh(path, lambda m, p=p, kw=kw: m.generate(p, **kw))
        for w in range(4)
        for j, (p, kw) in enumerate(calls_for(w, prompts))
    }
    start = threading.Barrier(4)
    with load(path) as m:

        def work(w):
            start.wait(WAIT)
            return [m.generate(p, **kw) for p, kw in calls_for(w, prompts)]

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(work, range(4)))
    assert {(w, j): got[w][j] for w in range(4) for j in range(3)} == want


# -- (b) interleaved iterators in one thread --------------------------------------------------------------
def test_second_iterator_in_the_same_thread_raises_busy_and_works_after_close(path, prompts):
    p1, p2 = prompts[0], prompts[1]
    want1 = fresh(path, lambda m: m.generate(p1, max_tokens=30))
    want2 = fresh(path, lambda m: m.generate(p2, max_tokens=30))
    with load(path) as m:
        a = m.stream(p1, max_tokens=30)
        b = m.stream(p2, max_tokens=30)
        text = next(a).text
        with pytest.raises(ModelBusyError, match="close"):
            next(b)
        for call in (
            lambda: m.generate(p2),
            lambda: m.logits(p2),
            lambda: m.chat([{"role": "user", "content": "hi"}], chat_template="plain"),
        ):
            with pytest.raises(ModelBusyError):
                call()
        text += "".join(c.text for c in a)  # a was not disturbed, and finishing it frees the model
        assert text == want1
        assert "".join(c.text for c in b) == want2  # b's busy error left it unstarted, so it still works

        a = m.stream(p1, max_tokens=30)
        next(a)
        a.close()
        assert m.generate(p2, max_tokens=30) == want2


def test_an_abandoned_iterator_releases_the_model(path, prompts):
    want = fresh(path, lambda m: m.generate(prompts[1], max_tokens=20))
    with load(path) as m:
        it = m.stream(prompts[0], max_tokens=20)
        next(it)
        del it  # garbage collected: its finally releases the lock
        assert m.generate(prompts[1], max_tokens=20) == want
        with m.stream(prompts[0]) as it:  # a context manager closes it
            next(it)
        assert m.generate(prompts[1], max_tokens=20) == want
        for _ in m.stream(prompts[0]):  # breaking out of a for loop drops it
            break
        assert m.generate(prompts[1], max_tokens=20) == want


def test_close_ends_this_threads_unfinished_iterator(path, prompts):
    m = load(path)
    it = m.stream(prompts[0])
    next(it)
    m.close()  # neither raises busy nor deadlocks
    with pytest.raises(StopIteration):
        next(it)


def test_stream_checks_arguments_at_the_call(path, prompts):
    with load(path) as m:
        with pytest.raises(ValueError):
            m.stream(prompts[0], max_tokens=-1)
        with pytest.raises(EdgeLLMError, match="vocabulary"):
            m.stream([1, 10**6])
        with pytest.raises(EdgeLLMError, match="context"):
            m.stream([5] * m.state.context)


# -- (c) threads consuming streams --------------------------------------------------------------------------
def test_two_threads_consuming_streams_match_serial(path, prompts):
    kws = [dict(max_tokens=40), dict(max_tokens=40, temperature=0.9, seed=3)]
    want = [fresh(path, lambda m, i=i: m.generate(prompts[i], **kws[i])) for i in range(2)]
    start = threading.Barrier(2)
    with load(path) as m:

        def work(i):
            chunks = m.stream(prompts[i], **kws[i])
            start.wait(WAIT)
            return "".join(c.text for c in chunks)

        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(work, range(2)))
    assert got == want


class _SpyLock:
    """Stands in for ModelLock's threading.Lock and says when some thread is about to wait for it."""

    def __init__(self, lock):
        self.lock, self.waiting = lock, threading.Event()

    def acquire(self):
        self.waiting.set()
        return self.lock.acquire()

    def release(self):
        self.lock.release()


def test_another_thread_waits_for_an_unfinished_iterator(path, prompts):
    want_a = fresh(path, lambda m: m.generate(prompts[0], max_tokens=40))
    want_b = fresh(path, lambda m: m.generate(prompts[1], max_tokens=40))
    with load(path) as m:
        it = m.stream(prompts[0], max_tokens=40)
        text = next(it).text  # this thread now holds the model
        spy = m._lock._lock = _SpyLock(m._lock._lock)
        result = []
        other = threading.Thread(target=lambda: result.append(m.generate(prompts[1], max_tokens=40)))
        other.start()
        assert spy.waiting.wait(WAIT)
        text += "".join(c.text for c in it)  # the other thread waits until this one is done
        assert text == want_a
        other.join(WAIT)
        assert result == [want_b]


# -- (d) exceptions mid-pass, and (e) logits after them --------------------------------------------------
def _inject_fault(m, monkeypatch, on_call: int, exc: type[BaseException]) -> list:
    """Make the on_call-th forward pass write garbage into the KV rows it covers, then raise."""
    real, calls = m.transformer.forward, []

    def forward(tokens, start_pos, all_logits=None, *, prompt=True):
        calls.append(start_pos)
        if len(calls) == on_call:
            m.state.key_cache[:, start_pos : start_pos + len(tokens)] = np.nan
            m.state.value_cache[:, start_pos : start_pos + len(tokens)] = np.nan
            raise exc("injected")
        return real(tokens, start_pos, all_logits, prompt=prompt)

    monkeypatch.setattr(m.transformer, "forward", forward)
    return calls


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("where", ["prefill", "decode"])
def test_an_exception_mid_pass_leaves_the_cache_consistent(path, prompts, monkeypatch, where, exc):
    monkeypatch.setattr(edgellm.api, "PREFILL_CHUNK", CHUNK)  # several prefill passes for LONG
    with load(path) as ref:
        prompt = ref.tokenizer.encode(LONG)
        assert len(prompt) % CHUNK == 1  # chunks end where a fresh prefill's do, whatever is reused
        tokens = [t for t, _ in edgellm.api.generate_tokens(ref.session, prompt, max_tokens=12)]
        want = ref.generate(LONG, max_tokens=30)
        want_logits = ref.logits(prompt)
    with load(path) as m:
        m.generate(prompts[3], max_tokens=30)  # the cache holds another text's entries
        n_prefill = -(-len(prompt) // CHUNK)
        fail_at = 3 if where == "prefill" else n_prefill + 5  # the 3rd prefill pass, or the 5th decode step
        with monkeypatch.context() as mp, pytest.raises(exc):
            calls = _inject_fault(m, mp, fail_at, exc)
            m.generate(LONG, max_tokens=30)
        good = prompt[: 2 * CHUNK] if where == "prefill" else prompt + tokens[:4]
        assert m.session.ids == good  # what was committed before the failed pass
        assert len(calls) == fail_at
        if where == "decode":
            # continuing past the failed step reuses all of `good`, exactly as a model that stopped there does
            more = prompt + tokens[:8]
            with load(path) as clean:
                clean.generate(LONG, max_tokens=5)  # its cache: prompt + 4 generated tokens
                assert clean.session.ids == good
                want_more = clean.generate(more, max_tokens=20)
            assert m.generate(more, max_tokens=20) == want_more
            assert m.session.reused == len(good)
        assert m.generate(LONG, max_tokens=30) == want
        np.testing.assert_array_equal(m.logits(prompt), want_logits)


def test_logits_after_an_interrupted_generation_equal_fresh_logits(path, prompts, monkeypatch):
    ids = prompts[2] + prompts[3]
    want = fresh(path, lambda m: m.logits(ids))
    with load(path) as m:
        with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
            _inject_fault(m, mp, 6, KeyboardInterrupt)
            m.generate(prompts[2], max_tokens=20)
        for _ in m.stream(prompts[4], max_tokens=20):  # and an abandoned stream
            break
        np.testing.assert_array_equal(m.logits(ids), want)


def test_chat_after_an_abandoned_stream_reuses_the_cache_correctly(path):
    convo = [{"role": "user", "content": "Tell me a story about a cat."}]
    quiet = dict(chat_template="plain", on_notice=lambda _: None)
    with load(path) as m:
        chunks = m.chat(convo, stream=True, max_tokens=40, **quiet)
        said = "".join(next(chunks).text for _ in range(5))
        chunks.close()  # Ctrl-C in `edgellm chat` does this
        in_cache = list(m.session.ids)
        nxt = convo + [{"role": "assistant", "content": said}, {"role": "user", "content": "And then?"}]
        reply = list(m.chat(nxt, stream=True, max_tokens=30, **quiet))
    # the reference finishes its first reply exactly where the abandoned one stopped, then takes the same turn
    n_prompt = fresh(path, lambda r: list(r.chat(convo, stream=True, max_tokens=1, **quiet))[-1].stats.prompt_tokens)
    with load(path) as ref:
        generated = len(in_cache) - n_prompt
        assert generated >= 4
        list(ref.chat(convo, stream=True, max_tokens=generated + 1, **quiet))
        assert ref.session.ids == in_cache  # the abandoned stream's ids: all in its cache
        want = list(ref.chat(nxt, stream=True, max_tokens=30, **quiet))
    assert reply[-1].stats.cached_tokens > n_prompt  # the abandoned reply's tokens were reused
    assert [c.text for c in reply] == [c.text for c in want]
    assert reply[-1].stats.cached_tokens == want[-1].stats.cached_tokens
