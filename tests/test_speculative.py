"""Speculative decoding (prompt lookup): the output never changes, greedy token for token, sampling in law."""

from __future__ import annotations

import numpy as np
import pytest

import edgellm
from edgellm.errors import InvalidArgumentError
from edgellm.generate.draft import MAX_DRAFT, MAX_PROBE_GAP, PROBE_EVERY, PromptLookup
from edgellm.generate.sampling import Sampler, filter_probs

# a prompt that repeats itself, so prompt lookup finds drafts (stories260K ids)
REPEATING = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 403, 407, 261, 378, 432, 383]


# the chi-square distribution's 99.9% quantiles by degrees of freedom: a correct rule fails 1 run in 1000
CHI2_999 = {
    1: 10.83,
    2: 13.82,
    3: 16.27,
    4: 18.47,
    5: 20.52,
    6: 22.46,
    7: 24.32,
    8: 26.12,
    9: 27.88,
    10: 29.59,
    11: 31.26,
}


def _run(m, prompt, **kw):
    chunks = list(m.stream(prompt, **kw))
    return [c.token for c in chunks], chunks[-1].stats


@pytest.mark.parametrize("quant", ["q4", "q8"])
@pytest.mark.parametrize("budget", [None, "minimum"])
def test_greedy_output_is_the_same_with_speculation_on_and_off(stories_ellm, quant, budget):
    kw: dict = {"context": 128}
    if budget:  # everything streams, the head too
        kw["ram_budget"] = edgellm.plan(stories_ellm[quant], context=128, ram_budget=1000).minimum_budget
    with edgellm.load(stories_ellm[quant], **kw) as m:
        if budget:
            assert m.plan.streamed, "the budget should stream some layers"
        off, s_off = _run(m, REPEATING, max_tokens=60, speculative=False)
        on, s_on = _run(m, REPEATING, max_tokens=60, speculative=True)
        default, _ = _run(m, REPEATING, max_tokens=60)
    assert on == off == default
    assert s_off.passes == len(off) - 1 and s_off.drafted == 0
    assert s_on.drafted > 0 and s_on.accepted > 0 and s_on.passes < s_off.passes  # it did speculate
    assert s_on.tokens_per_pass > 1.0 and s_on.accepted <= s_on.drafted


def test_greedy_identity_holds_with_a_repetition_penalty_and_stops(stories_ellm):
    with edgellm.load(stories_ellm["q4"]) as m:
        for kw in ({"repetition_penalty": 1.3}, {"stop": "the"}, {"max_tokens": 7}):
            args = {"max_tokens": 50, **kw}
            off = m.generate(REPEATING, speculative=False, **args)
            on = m.generate(REPEATING, speculative=True, **args)
            assert on == off, kw


def test_a_chat_that_reuses_its_cache_speculates_the_same(stories_ellm):
    """The conversation's history is a lookup source; a second turn on a reused cache gives what it gives off."""
    with edgellm.load(stories_ellm["q4"]) as m:
        outs = []
        for spec in (False, True):
            m.session.prefill([])  # an empty cache, the same start for both
            first = m.generate(REPEATING, max_tokens=30, speculative=spec)
            second = m.generate(REPEATING + [261, 378, 432], max_tokens=30, speculative=spec)
            outs.append((first, second))
    assert outs[0] == outs[1]


def test_rolled_back_drafts_leave_later_logits_bit_identical(stories_ellm):
    with edgellm.load(stories_ellm["q4"], context=128) as m:
        s = m.session
        prompt = REPEATING[:8]
        s.prefill(prompt)
        want = [s.step(t).copy() for t in (50, 60, 70)]
        s.prefill(prompt)
        rows = s.verify([50, 11, 12, 13])  # the current token and three drafts, all to be rejected
        assert rows.shape[0] == 4 and len(s.ids) == len(prompt) + 4
        s.rollback(len(prompt) + 1)  # keep the current token only
        np.testing.assert_array_equal(rows[0], want[0])
        got = [s.step(t).copy() for t in (60, 70)]
        for a, b in zip(got, want[1:]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 5, 0.9)])
def test_the_acceptance_rule_keeps_the_sampling_distribution(temperature, top_k, top_p):
    """judge(logits, d) draws a token whose law is exactly plain sampling's, whatever d is (a likely token, an
    unlikely one, one outside top-k): chi-square against the filtered probabilities over many seeded draws."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(12).astype(np.float32) * 2
    ids, p = filter_probs(logits, temperature, top_k, top_p)
    want = np.zeros(12)
    want[ids] = p
    for drafted in (int(ids[0]), int(ids[-1]), int(np.argmin(logits))):
        s = Sampler(temperature, top_k, top_p, seed=1)
        n = 20000
        counts = np.bincount([s.judge(logits, drafted)[1] for _ in range(n)], minlength=12)
        seen = want > 0
        assert counts[~seen].sum() == 0  # nothing outside the filtered set
        expected = want[seen] * n
        stat = float(((counts[seen] - expected) ** 2 / expected).sum())
        assert stat < CHI2_999[seen.sum() - 1], (drafted, stat)
        accepted = sum(s.judge(logits, drafted)[0] for _ in range(4000)) / 4000
        assert abs(accepted - want[drafted]) < 0.03  # accepted with probability p(d)


def test_sampling_with_speculation_gives_plain_samplings_tokens_for_a_seed(stories_ellm):
    """judge() spends one draw per emitted token, as plain sampling does, so a seed reproduces a run whatever
    was drafted: the same tokens with speculation on (twice: draft lengths follow timings) and off."""
    with edgellm.load(stories_ellm["q4"]) as m:
        kw = {"max_tokens": 40, "temperature": 0.8, "seed": 5}
        a, sa = _run(m, REPEATING, speculative=True, **kw)
        b, sb = _run(m, REPEATING, speculative=True, **kw)
        off, _ = _run(m, REPEATING, speculative=False, **kw)
        other, _ = _run(m, REPEATING, speculative=True, **{**kw, "seed": 6})
    assert a == b == off and sa.drafted > 0 and sb.accepted > 0
    assert other != a  # the seed matters


def test_speculation_is_refused_where_it_would_change_the_output(stories_ellm):
    """f32 weights prefill through BLAS: a pass over several tokens is not decode's numbers. The default leaves
    speculation off there; forcing it is one clear error."""
    with edgellm.load(stories_ellm["f32"]) as m:
        _, st = _run(m, REPEATING, max_tokens=20)
        assert st.drafted == 0 and st.passes == 19
        with pytest.raises(InvalidArgumentError, match="speculative"):
            m.generate(REPEATING, max_tokens=5, speculative=True)
        with pytest.raises(InvalidArgumentError, match="speculative"):
            m.generate(REPEATING, max_tokens=5, speculative="yes")


def test_prompt_lookup_drafts_what_followed_the_longest_match_and_adapts():
    d = PromptLookup([5, 6, 7, 8, 9, 1, 2, 5, 6, 7])
    assert d.length == 4  # priors: rate 0.6, cost 0.1 -> floor(log 0.1 / log 0.6)
    assert d.draft(8) == [8, 9, 1, 2]  # the suffix 5 6 7 matched at its earlier occurrence
    assert d.draft(2) == [8, 9]
    for _ in range(20):
        d.feedback(4, 4, cost=0.05)  # always right, and cheap: the longest drafts
    assert d.length == MAX_DRAFT and d.draft(20) == [8, 9, 1, 2, 5, 6, 7]  # as far as the history goes
    assert PromptLookup([1, 2, 3]).draft(8) == []  # nothing repeats
    d.extend([8])  # the suffix is now 6 7 8: its latest earlier occurrence
    assert d.draft(3) == [9, 1, 2]
    for _ in range(20):
        d.feedback(4, 0, cost=0.1)  # always wrong: drafting stops, but for a one-token probe now and then
    assert d.length == 0
    drafted = [len(d.draft(8)) for _ in range(3 * PROBE_EVERY)]
    assert sorted(set(drafted)) == [0, 1] and 2 <= sum(drafted) <= 3
    probes = []  # each probe rejected: the gap to the next one doubles, up to MAX_PROBE_GAP
    for i in range(16 * PROBE_EVERY):
        if d.draft(8):
            probes.append(i)
            d.feedback(1, 0, cost=0.1)
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps[:3] == [2 * PROBE_EVERY, 4 * PROBE_EVERY, 8 * PROBE_EVERY] and max(gaps) <= MAX_PROBE_GAP
    for _ in range(20):
        d.feedback(1, 1, cost=0.0)  # a text that turned repetitive, on a pass bound by flash: back to full drafts
    assert d.length == MAX_DRAFT and d.gap == PROBE_EVERY


def test_one_slow_pass_does_not_stop_drafting_but_a_lasting_cost_does():
    d = PromptLookup([1, 2, 3])
    for _ in range(10):
        d.feedback(4, 3, cost=0.05)  # rate -> 3/4: log(0.05) / log(0.75) > MAX_DRAFT
    assert d.length == MAX_DRAFT
    d.feedback(4, 3, cost=1.0)  # one pass that something else slowed down
    assert d.length == MAX_DRAFT
    for _ in range(2):
        d.feedback(4, 3, cost=1.0)  # the passes really cost this now: drafting stops
    assert d.length == 0


def test_the_cli_takes_speculative_flags(stories_ellm, capsys):
    from edgellm.cli.main import main

    prompt = "Once upon a time, there was a little girl named Lily. Once upon a time, there was"
    assert main(["run", str(stories_ellm["q4"]), "-p", prompt, "--max-tokens", "30", "--stats"]) == 0
    on = capsys.readouterr()
    assert (
        main(["run", str(stories_ellm["q4"]), "-p", prompt, "--max-tokens", "30", "--no-speculative", "--stats"]) == 0
    )
    off = capsys.readouterr()
    assert on.out == off.out  # the same story
    assert "tokens a pass" in on.err and "(0 of 0 drafted accepted)" in off.err
    assert "(0 of 0 drafted accepted)" not in on.err


# -- a draft model ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [None, "streams"])
def test_a_draft_model_changes_no_token_and_is_counted_in_the_budget(stories_ellm, budget):
    """stories260K q8 drafted by its own q4 copy (same vocabulary, mostly the same argmax): greedy and seeded
    sampling give plain decoding's tokens; the draft's bytes are a line of the plan, inside the budget."""
    kw: dict = {"context": 128, "draft": stories_ellm["q4"]}
    if budget:  # the main model streams beside the pinned draft
        kw["ram_budget"] = edgellm.plan(stories_ellm["q8"], ram_budget=1000, **kw).minimum_budget
    with edgellm.load(stories_ellm["q8"], **kw) as m:
        assert m.draft is not None and not m.draft.plan.streamed  # the draft is pinned whole
        assert m.plan.fixed["draft model"] == m.draft.plan.total > 0
        assert m.plan.total <= m.plan.budget
        if budget:
            assert m.plan.streamed
        prompt = REPEATING[:6]  # short: little for prompt lookup, so the tokens come from the draft model
        for sampling in ({}, {"temperature": 0.8, "seed": 3}):
            off, _ = _run(m, prompt, max_tokens=40, speculative=False, **sampling)
            on, st = _run(m, prompt, max_tokens=40, **sampling)
            assert on == off, sampling
            assert st.drafted > 0 and st.accepted > 0 and st.passes < len(on) - 1
    assert m.draft.file._f.closed  # closing the model closed its draft


def test_a_draft_model_drafts_where_prompt_lookup_has_nothing(stories_ellm):
    with (
        edgellm.load(stories_ellm["q8"], context=128) as plain,
        edgellm.load(stories_ellm["q8"], context=128, draft=stories_ellm["q4"]) as drafted,
    ):
        prompt = [1, 403, 407]  # nothing repeats yet
        _, lookup = _run(plain, prompt, max_tokens=40)
        _, model = _run(drafted, prompt, max_tokens=40)
    assert model.accepted > lookup.accepted and model.tokens_per_pass > lookup.tokens_per_pass


def test_a_budget_without_room_for_the_draft_is_refused(stories_ellm):
    alone = edgellm.plan(stories_ellm["q8"], context=128, ram_budget=1000).minimum_budget
    with_draft = edgellm.plan(stories_ellm["q8"], context=128, ram_budget=1000, draft=stories_ellm["q4"])
    assert with_draft.minimum_budget == alone + with_draft.draft.total
    with pytest.raises(edgellm.BudgetError, match="minimum workable budget"):
        edgellm.load(stories_ellm["q8"], context=128, ram_budget=alone, draft=stories_ellm["q4"])


def test_a_draft_with_another_vocabulary_is_one_clear_error(stories_ellm, tiny_model, tmp_path):
    other = edgellm.convert(tiny_model(), tmp_path / "other.ellm", quant="q8", progress=False).path
    with pytest.raises(InvalidArgumentError, match="vocabulary differs.*must share the model's tokenizer"):
        edgellm.load(stories_ellm["q8"], draft=other)
