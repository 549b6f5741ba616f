"""Chat as a person uses it: Model.chat from Python, and `edgellm chat` driven in a pseudo-terminal.

A tiny random-weight model (edgellm.synthetic, with a chat template) talks noise, so the tests check the
structure of what comes back (replies, prompts, notices, stats, files), never the words.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import edgellm
from edgellm.chat.templates import NO_TEMPLATE_NOTICE
from edgellm.cli.chat import HELP, RS, _stdout_writer
from edgellm.errors import EdgeLLMError
from edgellm.generate.generate import Stats
from edgellm.generate.stream import Chunk
from edgellm.synthetic import make_checkpoint

pexpect = pytest.importorskip("pexpect")

TIMEOUT = 120  # seconds for one exchange; numba compiles its kernels on a cold cache (~30 s)
SYSTEM = "You are a helpful assistant."
PROMPT = ">>> "
RS_LINE = f"\n{RS}\n"  # what ends each reply in piped mode
STATS_RE = re.compile(r"prompt: (\d+) tokens \((\d+) cached\).*\n.*decode: (\d+) tokens")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny HF checkpoint whose tokenizer has a chat template, its .ellm, and an .ellm without template."""
    root = tmp_path_factory.mktemp("chat")
    hf = make_checkpoint(root / "tiny-chat", "tiny")
    bare = shutil.copytree(hf, root / "tiny-bare")
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    return SimpleNamespace(
        hf=hf,
        ellm=edgellm.convert(hf, root / "tiny-chat.ellm", quant="q4", progress=False).path,
        bare=edgellm.convert(bare, root / "tiny-bare.ellm", quant="q4", progress=False).path,
    )


def load(path, **kw):
    # one compute thread: numba's parallel pool collapses when another process loads the cores
    return edgellm.load(path, threads=1, **kw)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# -- Python API -------------------------------------------------------------------------------------------
def test_chat_returns_the_reply_text(tiny):
    """The reply is the sampled continuation (seed 0) of the templated conversation up to an end-of-turn token:
    computed here serially on a fresh model with the token loop alone (no stream, stop matcher or lock) and the
    same sampler settings, decoded at once. (Greedy, this noise model only repeats one whitespace token.)"""
    from edgellm.chat.conversation import encode_chat, end_of_turn_ids
    from edgellm.generate.generate import generate_tokens

    messages = [{"role": "system", "content": SYSTEM}, user("Hello, who are you?")]
    with load(tiny.ellm) as m:
        reply = m.chat(messages, max_tokens=12, temperature=0.8, seed=0)
    with load(tiny.ellm) as ref:
        ends = end_of_turn_ids(ref.tokenizer)
        tokens = []
        for t, _ in generate_tokens(
            ref.session,
            encode_chat(ref.chat_template(), ref.tokenizer, messages),
            max_tokens=12,
            temperature=0.8,
            seed=0,
        ):
            if t in ends:
                break
            tokens.append(t)
        want = ref.tokenizer.decode(tokens)
    assert len(set(tokens)) > 3 and want.strip()  # a real reply to compare, not an empty one
    assert reply == want


def test_chat_stream_yields_chunks_the_last_with_stats(tiny):
    with load(tiny.ellm) as m:
        chunks = list(m.chat([user("Tell me about the dog.")], stream=True, max_tokens=12, seed=0))
    assert chunks and all(isinstance(c, Chunk) and isinstance(c.text, str) for c in chunks)
    last = chunks[-1]
    assert isinstance(last.stats, Stats) and last.finish_reason in ("stop", "length")
    assert all(c.stats is None and c.finish_reason is None for c in chunks[:-1])
    assert 1 <= last.stats.generated_tokens <= 12
    assert last.stats.prompt_tokens > 0 and last.stats.cached_tokens == 0  # a fresh model: nothing to reuse


def test_next_turn_reuses_the_kv_cache(tiny):
    with load(tiny.ellm) as m:
        convo = [{"role": "system", "content": SYSTEM}, user("Hello there.")]
        first = list(m.chat(convo, stream=True, max_tokens=16, seed=1))
        convo += [{"role": "assistant", "content": "".join(c.text for c in first)}, user("And then?")]
        second = list(m.chat(convo, stream=True, max_tokens=16, seed=1))[-1].stats
    p1 = first[-1].stats.prompt_tokens
    assert second.prompt_tokens > p1
    assert second.cached_tokens > 0
    # at least the first prompt (up to where its last token and the reply's re-tokenization may differ) is
    # reused: only the new tail is recomputed
    assert second.cached_tokens >= p1 - 2
    assert second.prompt_tokens - second.cached_tokens < second.prompt_tokens - p1 + 3


def test_long_conversation_drops_oldest_turns_keeps_system(tiny):
    notices = []
    with load(tiny.ellm, context=128) as m:  # room for about two turns (the template's markers cost tokens)
        convo = [{"role": "system", "content": SYSTEM}]
        for i in range(8):
            convo.append(user(f"the dog ran to the house {i}"))
            chunks = list(m.chat(convo, stream=True, max_tokens=8, seed=i, on_notice=notices.append))
            assert chunks[-1].stats.prompt_tokens + chunks[-1].stats.generated_tokens <= 128
            convo.append({"role": "assistant", "content": "".join(c.text for c in chunks)})
        kept, dropped = m.fit_chat(convo + [user("One more.")], max_tokens=8)
    assert notices and all("outgrew the context of 128 tokens" in n and "oldest message(s)" in n for n in notices)
    assert dropped > 0
    assert kept[0] == {"role": "system", "content": SYSTEM}
    assert kept[1]["role"] == "user" and kept[-1] == user("One more.")  # whole turns are dropped
    assert kept[1:] == (convo + [user("One more.")])[-(len(kept) - 1) :]  # the newest turns are kept


def test_message_too_long_for_the_context_raises_one_line(tiny):
    with load(tiny.ellm, context=64) as m:
        for convo in ([user("dog " * 200)], [{"role": "system", "content": "cat " * 100}, user("Hi")]):
            with pytest.raises(EdgeLLMError) as e:
                m.chat(convo, max_tokens=8)
            msg = str(e.value)
            assert "\n" not in msg and msg.startswith("the last message alone is ") and "context" in msg
            assert ("with the system prompt" in msg) == (convo[0]["role"] == "system")
        assert isinstance(m.chat([user("Hi")], max_tokens=4), str)  # still usable afterwards


@pytest.mark.parametrize(
    "spec,text",
    [
        (None, "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"),  # the model's own
        ("chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        ("plain", "Be brief.\nUser: Hi\nAssistant:"),
    ],
)
def test_template_choice(tiny, spec, text):
    notices = []
    with load(tiny.ellm) as m:
        chunks = list(
            m.chat(
                [{"role": "system", "content": "Be brief."}, user("Hi")],
                stream=True,
                chat_template=spec,
                max_tokens=1,
                on_notice=notices.append,
            )
        )
        expected = len(m.tokenizer.encode(text))
    assert chunks[-1].stats.prompt_tokens == expected
    assert notices == []


def test_model_without_template_uses_plain_format_with_a_notice(tiny):
    notices = []
    convo = [user("Hi")]
    with load(tiny.bare) as m:
        assert m.tokenizer.chat_template is None
        stats = list(m.chat(convo, stream=True, max_tokens=2, on_notice=notices.append))[-1].stats
        assert stats.prompt_tokens == len(m.tokenizer.encode("User: Hi\nAssistant:"))
        assert isinstance(
            m.chat(
                convo + [{"role": "assistant", "content": "Hello"}, user("Bye")], max_tokens=2, on_notice=notices.append
            ),
            str,
        )
        assert notices == [NO_TEMPLATE_NOTICE]  # said once, not at every turn
        notices.clear()
        m.chat(convo, max_tokens=1, chat_template="chatml", on_notice=notices.append)
        assert notices == []  # a template was chosen: nothing to say
    with load(tiny.bare) as m, pytest.warns(UserWarning, match="no chat template"):
        m.chat(convo, max_tokens=1)  # without on_notice: a warning


# -- edgellm chat in a terminal ---------------------------------------------------------------------------
def chat_env(tmp_path: Path) -> dict:
    env = dict(os.environ, EDGELLM_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path), TERM="dumb", PYTHONUNBUFFERED="1")
    env.pop("XDG_CACHE_HOME", None)
    return env


def spawn_chat(tmp_path: Path, model, *args: str):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "edgellm.cli.main", "chat", str(model), "--threads", "1", *args],
        cwd=str(tmp_path),
        env=chat_env(tmp_path),
        encoding="utf-8",
        codec_errors="replace",
        timeout=TIMEOUT,
        dimensions=(40, 400),
    )
    child.logfile_read = open(tmp_path / "terminal.log", "w", encoding="utf-8")  # for post-mortems
    child.expect_exact(PROMPT)
    return child


def say(child, text: str) -> str:
    """Type a line at the prompt; returns what was printed before the next prompt."""
    child.sendline(text)
    child.expect_exact(text + "\r\n")
    child.expect_exact(PROMPT)
    return child.before


def stats_of(child) -> tuple[str, tuple[int, int, int]]:
    out = say(child, "/stats")
    m = STATS_RE.search(out.replace("\r\n", "\n"))
    assert m, out
    assert "time to first token" in out and "tok/s" in out and "peak RSS" in out and "MB read" in out
    return out, tuple(int(g) for g in m.groups())


def interrupt_a_reply(child, attempts: int = 6) -> None:
    """Press Ctrl-C once the reply has started. A reply that ends (end of turn) before the signal lands is
    not a failure of the program: the Ctrl-C then reaches the prompt, and the next line tries again."""
    for i in range(attempts):
        line = f"Tell me a very long story, number {i}."
        child.sendline(line)
        child.expect_exact(line + "\r\n")
        child.expect(r"[\s\S]")  # the first character of the reply
        child.sendintr()
        k = child.expect_exact(["[interrupted]", "[Ctrl-C again or Ctrl-D to leave]"])
        child.expect_exact(PROMPT)
        if k == 0:
            return
    pytest.fail(f"every one of {attempts} replies ended before Ctrl-C reached it")


def test_interactive_session(tiny, tmp_path):
    child = spawn_chat(tmp_path, tiny.ellm, "--system", SYSTEM, "--max-tokens", "400", "--seed", "7")
    assert "edgellm chat with tiny-chat.ellm" in child.before and "/help" in child.before
    assert "no reply yet" in say(child, "/stats")
    assert "/reset" in say(child, "/help")

    # two turns, then /stats: the second prompt reused the first from the KV cache
    say(child, "Hello there, who are you?")
    _, (prompt1, cached1, _) = stats_of(child)
    assert cached1 == 0
    say(child, "What can you do?")
    before, (prompt2, cached2, gen2) = stats_of(child)
    assert prompt2 > cached2 > 0 and gen2 >= 1

    assert "[saved 5 messages to two-turns.json]" in say(child, "/save two-turns.json")
    saved = json.loads((tmp_path / "two-turns.json").read_text(encoding="utf-8"))["messages"]
    assert [m["role"] for m in saved] == ["system", "user", "assistant", "user", "assistant"]
    assert saved[0]["content"] == SYSTEM and saved[3]["content"] == "What can you do?"

    # Ctrl-C in the middle of a reply stops it and leaves the model usable
    interrupt_a_reply(child)
    say(child, "Thanks, tell me something else.")
    after, (prompt4, cached4, gen4) = stats_of(child)
    assert after != before  # the stats are those of the reply after the interrupt
    assert prompt4 > cached4 > 0 and gen4 >= 1  # ...which reused the cache (at least the system prompt)

    # /reset forgets the conversation but keeps the system prompt
    assert "[conversation cleared]" in say(child, "/reset")
    say(child, "/save reset.json")
    assert json.loads((tmp_path / "reset.json").read_text())["messages"] == [{"role": "system", "content": SYSTEM}]
    assert "[loaded 5 messages]" in say(child, "/load two-turns.json")
    assert "unknown command /nope" in say(child, "/nope")

    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # line editing history goes to the cache directory, not elsewhere under HOME
    history = (tmp_path / "cache" / "chat_history").read_text(encoding="utf-8")
    assert "What can you do?" in history and "/reset" in history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "reset.json", "terminal.log", "two-turns.json"]


def test_interactive_errors_keep_the_session_and_ctrl_c_twice_leaves(tiny, tmp_path):
    child = spawn_chat(tmp_path, tiny.ellm, "--context", "128", "--max-tokens", "8")
    # a message too long for the context is refused in one line; the conversation goes on
    child.sendline("dog " * 150)
    child.expect(r"the last message alone is \d+ tokens[^\r\n]*\r\n")
    child.expect_exact(PROMPT)
    say(child, "Hello")
    _, (prompt, cached, gen) = stats_of(child)
    assert prompt < 60 and gen >= 1  # the refused message is not part of the conversation
    assert "cannot load" in say(child, "/load missing.json")
    child.sendintr()
    child.expect_exact("[Ctrl-C again or Ctrl-D to leave]")
    child.expect_exact(PROMPT)
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_d_leaves(tiny, tmp_path):
    child = spawn_chat(tmp_path, tiny.ellm)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- edgellm chat in a pipe -------------------------------------------------------------------------------
def run_chat(tmp_path: Path, model, stdin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgellm.cli.main", "chat", str(model), "--threads", "1", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=chat_env(tmp_path),
        cwd=tmp_path,
        timeout=TIMEOUT,
    )


def test_piped_mode_one_turn_per_line_only_replies_on_stdout(tiny, tmp_path):
    r = run_chat(
        tmp_path,
        tiny.ellm,
        "Hello there\n\nHow are you?\n/stats\n",
        "--max-tokens",
        "24",
        "--seed",
        "3",
        "--stats",
        "--system",
        SYSTEM,
    )
    assert r.returncode == 0, r.stderr
    stats = [tuple(int(g) for g in m.groups()) for m in STATS_RE.finditer(r.stderr)]
    assert len(stats) == 3  # --stats after each of the two turns, then /stats
    assert stats[0][1] == 0 and all(p > c > 0 for p, c, _ in stats[1:])  # later turns reuse the cache
    assert stats[2] == stats[1]  # /stats: the last reply's
    assert r.stdout.endswith(RS_LINE) and len(r.stdout.split(RS_LINE)) == 3
    for noise in (PROMPT, "edgellm chat with", "prompt:", "decode:", "[the conversation", "[interrupted]"):
        assert noise not in r.stdout  # no banner, prompt, stats nor notices
    assert not (tmp_path / "cache" / "chat_history").exists()


def test_piped_replies_end_with_an_rs_line_and_commands_never_reach_the_model(stories_ellm, tmp_path):
    """Plain piped mode on stories260K: one reply per turn, each followed by a line holding only RS; the
    /commands work (on stderr), an unknown one is refused in one line, `//` sends a leading slash."""
    stdin = (
        "Once upon a time\n/help\n\n//slash at the start\n/stats\n/nope\n/save conv.json\nThe dog ran\n"
        "/reset\n/save reset.json\n/exit\nnever sent\n"
    )
    r = run_chat(tmp_path, stories_ellm["q4"], stdin, "--chat-template", "plain", "--seed", "1", "--max-tokens", "48")
    assert r.returncode == 0, r.stderr
    *replies, rest = r.stdout.split(RS_LINE)
    assert len(replies) == 3 and rest == ""  # "never sent" came after /exit
    saved = json.loads((tmp_path / "conv.json").read_text(encoding="utf-8"))["messages"]
    assert [m["role"] for m in saved] == ["user", "assistant"] * 2
    assert [m["content"] for m in saved[::2]] == ["Once upon a time", "/slash at the start"]
    assert [m["content"] for m in saved[1::2]] == replies[:2]  # the records are exactly the replies
    assert json.loads((tmp_path / "reset.json").read_text())["messages"] == []
    err = r.stderr.splitlines()
    assert HELP in r.stderr and len(STATS_RE.findall(r.stderr)) == 1
    assert err.count("unknown command /nope; /help lists them") == 1
    for said in ("[saved 4 messages to conv.json]", "[conversation cleared]", "[saved 0 messages to reset.json]"):
        assert said in err


def test_piped_writer_never_lets_an_rs_through(capsys):
    write = _stdout_writer(RS)
    write("a\x1eb")
    write("\n\x1e")
    assert capsys.readouterr().out == "a\ufffdb\n\ufffd"


def test_jsonl_one_json_line_per_input_line(stories_ellm, tmp_path):
    lines = [
        "Once upon a time",
        '{"content": "/not a command"}',
        "/stats",
        "",
        "/nope",
        "{not json",
        '{"role": "system", "content": "x"}',
        '{"content": 5}',
        "dog " * 600,
        "/save conv.json",
        "/exit",
        "never sent",
    ]
    r = run_chat(
        tmp_path,
        stories_ellm["q4"],
        "\n".join(lines) + "\n",
        "--chat-template",
        "plain",
        "--seed",
        "1",
        "--max-tokens",
        "24",
        "--jsonl",
        "--stats",
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 10  # every non-blank line up to /exit, nothing else
    first, second, stats, nope, bad, system, number, long, save, leave = out
    for reply in (first, second):
        assert set(reply) == {"role", "content", "finish_reason", "stats"} and reply["role"] == "assistant"
        assert reply["finish_reason"] in ("stop", "length") and reply["stats"]["generated_tokens"] >= 1
    assert second["stats"]["cached_tokens"] > 0  # the second turn reused the first from the cache
    assert stats["command"] == "/stats" and stats["ok"] and stats["stats"] == second["stats"]
    assert STATS_RE.search(stats["text"])
    assert nope == {"command": "/nope", "ok": False, "text": "unknown command /nope; /help lists them"}
    assert bad["error"].startswith("cannot read the JSON line")
    assert system == {"error": "a JSON line is a user turn; got role 'system'"}
    assert number == {"error": 'a JSON line must be an object with a "content" string'}
    assert long["error"].startswith("the last message alone is ")  # refused; the session goes on
    assert save == {"command": "/save", "ok": True, "text": "[saved 4 messages to conv.json]"}
    assert leave == {"command": "/exit", "ok": True, "text": ""}
    saved = json.loads((tmp_path / "conv.json").read_text(encoding="utf-8"))["messages"]
    assert [m["content"] for m in saved] == ["Once upon a time", first["content"], "/not a command", second["content"]]


def test_piped_mode_drops_oldest_turns_with_a_notice(tiny, tmp_path):
    lines = "".join(f"the dog ran to the house {i}\n" for i in range(6))
    r = run_chat(tmp_path, tiny.ellm, lines, "--context", "128", "--max-tokens", "8", "--system", SYSTEM)
    assert r.returncode == 0, r.stderr
    assert "[the conversation outgrew the context of 128 tokens: dropped its" in r.stderr
    assert r.stdout.count("\n") >= 6


def test_model_directory_converted_on_first_use_then_reused(tiny, tmp_path):
    src = shutil.copytree(tiny.hf, tmp_path / "my-model")
    models = tmp_path / "cache" / "models"

    first = run_chat(tmp_path, src, "Hi\n", "--max-tokens", "4")
    assert first.returncode == 0, first.stderr
    assert "converting" in first.stderr and "once; cached in" in first.stderr
    [ellm] = models.glob("*.ellm")
    assert ellm.name.startswith("my-model-q4-")
    stamp = ellm.stat().st_mtime_ns

    again = run_chat(tmp_path, src, "Hi\n", "--max-tokens", "4")
    assert again.returncode == 0, again.stderr
    assert "converting" not in again.stderr
    assert list(models.glob("*.ellm")) == [ellm] and ellm.stat().st_mtime_ns == stamp

    # an edited checkpoint is converted again
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["chat_template"] = cfg["chat_template"].replace("<|assistant|>", "<|bot|>")
    (src / "tokenizer_config.json").write_text(json.dumps(cfg))
    edited = run_chat(tmp_path, src, "Hi\n", "--max-tokens", "4")
    assert edited.returncode == 0, edited.stderr
    assert "converting" in edited.stderr and len(list(models.glob("*.ellm"))) == 2
