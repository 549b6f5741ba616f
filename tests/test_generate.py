"""The generation layers on stories260K: the token loop (generate_tokens), the text stream (stream_text: one
Chunk per generated token, stops, end ids, stats) and Model.stream / generate delegating to it."""

from __future__ import annotations

import numpy as np
import pytest

import edgellm
from edgellm.errors import InvalidArgumentError
from edgellm.generate.generate import generate_tokens
from edgellm.generate.stream import Chunk, stream_text

PROMPT = [1, 403, 407, 261, 378]


@pytest.fixture(scope="module")
def model(stories_ellm):
    with edgellm.load(stories_ellm["q4"], threads=1) as m:
        yield m


def _tokens(m, n: int) -> list[int]:
    return [t for t, _ in generate_tokens(m.session, PROMPT, max_tokens=n)]


def test_a_reused_prefix_gives_what_a_fresh_prefill_gives(stories_ellm):
    """The prompt token a cached prefix leaves to feed goes through the prefill kernels (f32 activations), as
    in a fresh prefill, not the decode kernels (int8): the first reply token, and the rest, cannot drift."""
    with edgellm.load(stories_ellm["q4"], threads=1) as m:
        m.session.ids.clear()
        fresh = m.session.prefill(PROMPT).copy()
        want = _tokens(m, 24)
        m.session.prefill(PROMPT + [9, 9])
        again = m.session.prefill(PROMPT)  # the cache holds the prompt and more: its last token is fed again
        assert m.session.reused == len(PROMPT) - 1
        np.testing.assert_allclose(again, fresh, rtol=0, atol=1e-5 * np.abs(fresh).max())
        assert _tokens(m, 24) == want


@pytest.mark.parametrize("quant", ["q4", "q8"])
@pytest.mark.parametrize("threads", [1, 2])
def test_one_pass_over_several_tokens_gives_each_the_logits_decode_gives_it(stories_ellm, quant, threads):
    """Speculative verification's premise: pushing k tokens through one pass (the integer tiles, on decode's
    drivers up to SMALL_BATCH tokens, on the prefill pool past it) gives every position exactly the logits that
    decoding those tokens one by one gives, so accepting a drafted token changes nothing."""
    from edgellm.kernels.parallel import SMALL_BATCH

    with edgellm.load(stories_ellm[quant], threads=threads, context=128) as m:
        prompt, s, vocab = [1, 403, 407, 261, 378], m.session, m.config.vocab_size
        drafted = [int(t) for t in np.random.default_rng(1).integers(3, vocab, SMALL_BATCH + 3)]
        s.prefill(prompt)
        one_by_one = np.stack([s.step(t).copy() for t in drafted])
        for k in (2, 5, SMALL_BATCH, SMALL_BATCH + 3):
            s.prefill(prompt)
            rows = np.zeros((k, vocab), np.float32)
            s.t.forward(np.array(drafted[:k]), len(prompt), rows)
            np.testing.assert_array_equal(rows, one_by_one[:k], err_msg=f"{k} tokens")


def test_one_chunk_per_token_the_last_with_stats(model):
    want = _tokens(model, 24)
    chunks = list(
        stream_text(model.session, model.tokenizer, PROMPT, max_tokens=24, end_ids=[], weights=model.provider)
    )
    assert all(isinstance(c, Chunk) for c in chunks)
    assert [c.token for c in chunks] == want  # the last token once, at the end
    assert [c.finish_reason for c in chunks] == [None] * 23 + ["length"]
    assert "".join(c.text for c in chunks) == model.tokenizer.decode(want)
    st = chunks[-1].stats
    assert (st.prompt_tokens, st.generated_tokens) == (len(PROMPT), 24) and st.peak_rss_bytes > 0
    assert all(c.stats is None for c in chunks[:-1])
    # Model.stream is this stream under the Model's lock
    assert [(c.text, c.token, c.finish_reason) for c in model.stream(PROMPT, max_tokens=24)] == [
        (c.text, c.token, c.finish_reason) for c in chunks
    ]


def test_a_stop_string_ends_the_text_before_it(model):
    want = _tokens(model, 24)
    full = model.tokenizer.decode(want)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    chunks = list(stream_text(model.session, model.tokenizer, PROMPT, max_tokens=24, stop=stop, end_ids=[]))
    text = "".join(c.text for c in chunks)
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].stats is not None
    tokens = [c.token for c in chunks]
    assert tokens == want[: len(tokens)] and len(tokens) < 24  # generation stopped there
    assert stop in model.tokenizer.decode(tokens) and stop not in model.tokenizer.decode(tokens[:-1])


def test_an_end_token_is_the_last_chunks_token(model):
    want = _tokens(model, 24)
    end = want[10]
    first = want.index(end)
    chunks = list(stream_text(model.session, model.tokenizer, PROMPT, max_tokens=24, end_ids=[end]))
    assert [c.token for c in chunks] == want[: first + 1]
    assert chunks[-1].finish_reason == "stop"
    assert "".join(c.text for c in chunks) == model.tokenizer.decode(want[:first])  # the end token has no text


def test_no_tokens_and_bad_arguments(model):
    chunks = list(stream_text(model.session, model.tokenizer, PROMPT, max_tokens=0))
    assert [(c.text, c.token, c.finish_reason) for c in chunks] == [("", None, "length")]
    assert chunks[0].stats.generated_tokens == 0
    with pytest.raises(InvalidArgumentError, match="max_tokens"):
        stream_text(model.session, model.tokenizer, PROMPT, max_tokens=-1)  # at the call
    with pytest.raises(edgellm.EdgeLLMError, match="context"):
        stream_text(model.session, model.tokenizer, [1] * model.state.context)
