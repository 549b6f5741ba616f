"""Issue 11: every user error is one line, every input is safe.

The real `edgellm` command in a subprocess for each bad flag, bad path and bad byte a user can give it: exactly
one stderr line `edgellm: error: ...`, a non-zero exit, no traceback. Then the shared checks in process: the
same ranges at the Python API, the budget parser, the model resolver, and every option's help.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import make_tiny_model

import edgellm
from edgellm.errors import EdgeLLMError, InvalidArgumentError

TEXT = Path(__file__).parent / "data" / "tinystory.txt"
ERROR = "edgellm: error: "
NOTE = "edgellm: note: "


# -- helpers -------------------------------------------------------------------------------------------------
def cli(*args, stdin: bytes = b"", env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `edgellm ARGS` (str, Path or raw bytes arguments); stdout and stderr are decoded for the asserts."""
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    r = subprocess.run(
        [sys.executable, "-m", "edgellm.cli.main", *argv], input=stdin, capture_output=True, env=env, timeout=timeout
    )
    r.stdout = r.stdout.decode("utf-8", errors="replace")
    r.stderr = r.stderr.decode("utf-8", errors="replace")
    return r


def assert_one_line_error(r, match: str = "") -> str:
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1, r.stderr
    assert match in errors[0], r.stderr
    return errors[0]


def assert_one_note(r, *words: str) -> None:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith(NOTE)]
    assert len(notes) == 1, r.stderr
    for w in words:
        assert w in notes[0], r.stderr


# -- fixtures --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def env(tmp_path_factory) -> dict:
    """The environment of every subprocess: its own cache directory (conversions, demo model), no ~/.cache."""
    return dict(os.environ, EDGELLM_CACHE=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def model(stories_ellm) -> Path:
    return stories_ellm["q4"]


@pytest.fixture(scope="session")
def bad_paths(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (a path that is not a model, what its error line says)."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.ellm").write_bytes(b"")
    (d / "text.ellm").write_text("just a text file, renamed to look like a model file\n" * 3)
    (d / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    (d / "not-a-model").mkdir()
    (d / "w.safetensors").write_bytes(bytes(16))
    return {
        "missing": (d / "nope.ellm", "no such file"),
        "empty": (d / "empty.ellm", "truncated"),
        "text": (d / "text.ellm", "not an .ellm file"),
        "gguf": (d / "model.gguf", "GGUF"),  # a header the gguf reader refuses (or, for verify: not .ellm)
        "dir": (d / "not-a-model", "no config.json"),
        "weights": (d / "w.safetensors", "weights file alone"),
    }


# -- 1. validation at the edge: the CLI --------------------------------------------------------------------
RUN_FLAGS = [
    (["--max-tokens", "-1"], "--max-tokens"),
    (["--temp", "-1"], "--temp"),
    (["--temp", "nan"], "--temp"),
    (["--top-p", "2"], "--top-p"),
    (["--top-p", "0"], "--top-p"),
    (["--top-k", "-3"], "--top-k"),
    (["--min-p", "2"], "--min-p"),
    (["--repeat-penalty", "0"], "--repeat-penalty"),
    (["--seed", "-1"], "--seed"),
    (["--context", "0"], "--context"),
    (["--context", "99999999"], "context 99999999"),
    (["--threads", "0"], "--threads"),
    (["--threads", "999"], "--threads"),
    (["--slots", "0"], "--slots"),
    (["--ram-budget", "abc"], "cannot read the RAM budget"),
    (["--ram-budget", "-5"], "positive"),
    (["--ram-budget", "0%"], "positive share"),
    (["--ram-budget", "10KB"], "minimum workable budget"),
    (["--device", "toaster"], "unknown device"),
    (["--max-tokens", "abc"], "invalid int value"),
    (["--quant", "q5"], "invalid choice"),
    (["--draft", "/nonexistent/d.ellm"], "no such file"),
]


@pytest.mark.parametrize("flags,match", RUN_FLAGS, ids=[" ".join(f) for f, _ in RUN_FLAGS])
def test_run_bad_flag_is_one_line(model, env, flags, match):
    assert_one_line_error(cli("run", model, "-p", "hi", *flags, env=env), match)


OTHER_FLAGS = [
    (["chat", "{m}", "--max-tokens", "-2"], "--max-tokens"),
    (["chat", "{m}", "--top-p", "0"], "--top-p"),
    (["chat", "{m}", "--draft", "{empty}"], "truncated"),
    (["bench", "{m}", "--draft", "/nonexistent/d.ellm"], "no such file"),
    (["perplexity", "{m}", "--text", str(TEXT), "--window", "1"], "--window"),
    (["perplexity", "{m}", "--text", str(TEXT), "--window", "99999"], "--window must be between 2 and"),
    (["perplexity", "{m}", "--text", "/nonexistent/t.txt"], "cannot read"),
    (["perplexity", "{m}", "--text", "{dir}"], "cannot read"),
    (["perplexity", "{m}", "--text", "{empty}"], "nothing to score"),
    (["perplexity", "{m}", "--text", str(TEXT), "--reference", "/nonexistent/r.ellm"], "no such file"),
    (["bench", "{m}", "--prompt-tokens", "0"], "--prompt-tokens"),
    (["bench", "{m}", "--gen-tokens", "1"], "--gen-tokens"),
    (["bench", "{m}", "--repeat", "0"], "--repeat"),
    (["bench", "{m}", "--threads", "0"], "--threads"),
    (["bench", "{m}", "--ram-budget", "abc"], "RAM budget"),
    (["bench", "{m}", "--sweep", "budget=abc"], "RAM budget"),
    (["bench", "{m}", "--sweep", "nonsense"], "--sweep"),
    (["bench", "{m}", "--json", "/nonexistent/r.json"], "does not exist"),
    (["plan", "{m}", "--ram-budget", "abc"], "RAM budget"),
    (["plan", "{m}", "--slots", "0"], "--slots"),
    (["plan", "{m}", "--context", "-3"], "--context"),
    (["plan", "{m}", "--ram-budget", "50%"], "minimum workable budget"),
    (["convert", "{hf}", "-o", "{out}", "--threads", "0"], "--threads"),
    (["convert", "{hf}", "-o", "{out}", "--level", "99"], "--level"),
    (["convert", "{hf}", "-o", "{out}", "--group-size", "7"], "invalid choice"),
    (["analyze", "{m}", "--max-tensors", "0"], "--max-tensors"),
    (["analyze", "{m}", "--levels", "x"], "--levels"),
    (["demo", "--prompt-tokens", "0"], "--prompt-tokens"),
    (["demo", "--budgets", "abc"], "RAM budget"),
    (["demo", "--device", "toaster"], "unknown device"),
    (["demo", "--json", "/nonexistent/r.json"], "does not exist"),
]


@pytest.mark.parametrize("args,match", OTHER_FLAGS, ids=[" ".join(a[:1] + a[2:]) for a, _ in OTHER_FLAGS])
def test_other_commands_bad_flag_is_one_line(model, stories_dir, bad_paths, env, tmp_path, args, match):
    fill = {"m": model, "hf": stories_dir, "out": tmp_path / "o.ellm", "dir": tmp_path, "empty": bad_paths["empty"][0]}
    r = cli(*(a.format(**fill) for a in args), stdin=b"hi\n", env=env)
    assert_one_line_error(r, match)
    assert not (tmp_path / "o.ellm").exists()


def test_a_draft_model_of_another_vocabulary_is_one_line(model, env, tmp_path):
    other = edgellm.convert(make_tiny_model(tmp_path / "tiny"), tmp_path / "other.ellm", progress=False).path
    r = cli("run", model, "-p", "hi", "--draft", other, env=env)
    assert_one_line_error(r, "the draft model's vocabulary differs from the model's")


MODEL_COMMANDS = {
    "run": ["-p", "hi"],
    "chat": [],
    "bench": [],
    "perplexity": ["--text", str(TEXT)],
    "plan": [],
    "inspect": [],
}


# every kind of bad path for `run`; for the other commands the kinds that take each branch of the shared resolver
# (a directory, a .gguf the reader refuses, a file EllmFile refuses)
BAD_MODELS = [("run", k) for k in ("missing", "empty", "text", "gguf", "dir", "weights")] + [
    (c, k) for c in MODEL_COMMANDS if c != "run" for k in ("empty", "gguf", "dir")
]


@pytest.mark.parametrize("command,kind", BAD_MODELS, ids=[f"{c}-{k}" for c, k in BAD_MODELS])
def test_every_model_command_refuses_a_bad_model_in_one_line(bad_paths, env, command, kind):
    path, match = bad_paths[kind]
    assert_one_line_error(cli(command, path, *MODEL_COMMANDS[command], stdin=b"hi\n", env=env), match)


@pytest.mark.parametrize("command", ["verify", "analyze"])
def test_file_commands_refuse_gguf_and_missing_paths(bad_paths, env, command):
    for kind in ("missing", "gguf"):
        path, match = bad_paths[kind]
        assert_one_line_error(cli(command, path, env=env), match)


# -- non-UTF-8 input ------------------------------------------------------------------------------------------
def test_invalid_utf8_in_argv_prompt_is_replaced_with_one_note(model, env):
    r = cli("run", model, "-p", b"Once upon a \xff time", "--max-tokens", "4", env=env)
    assert_one_note(r, "--prompt", "invalid UTF-8", "replaced")
    assert r.stdout.strip()


def test_invalid_utf8_on_stdin_prompt_is_replaced_with_one_note(model, env):
    r = cli("run", model, "-p", "-", "--max-tokens", "4", stdin=b"Once upon a \xe9\xff time", env=env)
    assert_one_note(r, "standard input", "invalid UTF-8", "replaced")


def test_invalid_utf8_in_a_stop_string_is_replaced(model, env):
    r = cli("run", model, "-p", "Once", "--max-tokens", "4", "--stop", b"\xfe\xff", env=env)
    assert_one_note(r, "--stop", "invalid UTF-8")


def test_invalid_utf8_in_piped_chat_is_replaced_with_one_note(model, env):
    r = cli("chat", model, "--max-tokens", "4", "--threads", "1", stdin=b"hi \xff there\nagain \xfe\n", env=env)
    assert_one_note(r, "standard input", "invalid UTF-8", "replaced")
    assert r.stdout.count("\n") >= 2  # both turns were answered


def test_invalid_utf8_in_a_perplexity_text_is_replaced_with_one_note(model, env, tmp_path):
    text = tmp_path / "latin1.txt"
    text.write_bytes(TEXT.read_bytes()[:400] + b" caf\xe9 \xff\n")
    r = cli("perplexity", model, "--text", text, env=env)
    assert_one_note(r, "latin1.txt", "invalid UTF-8", "replaced")
    assert "perplexity" in r.stdout


# -- bench and demo: what ran is printed, then a non-zero exit ----------------------------------------------
def test_bench_prints_what_ran_then_fails_for_the_configuration_that_could_not(stories_dir, env):
    # a Hugging Face directory: bench goes through the same front door as every other command
    r = cli(
        "bench",
        stories_dir,
        "--sweep",
        "budget=10KB,900%",
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "2",
        "--threads",
        "1",
        env=env,
    )
    line = assert_one_line_error(r, "1 of 2 configuration(s) could not run")
    assert "minimum workable budget" in line
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith("budget=")}
    assert "error:" in rows["budget=10KB"] and "error:" not in rows["budget=900%"]


def test_demo_that_cannot_run_exits_non_zero(env):
    r = cli("demo", "--preset", "tiny", "--budgets", "1KB", "--prompt-tokens", "2", "--gen-tokens", "2", env=env)
    assert_one_line_error(r, "1 of 1 configuration(s) could not run")
    assert "budget=1KB" in r.stdout and "error:" in r.stdout


# -- 2. one front door ------------------------------------------------------------------------------------------
def test_hugging_face_directory_is_converted_once_for_every_command(stories_dir, tmp_path):
    env = dict(os.environ, EDGELLM_CACHE=str(tmp_path / "cache"))
    first = cli("inspect", stories_dir, env=env)
    assert first.returncode == 0, first.stderr
    converting = f"converting {stories_dir} to q4 (once; cached in"
    assert converting in first.stderr and "bits/weight" in first.stdout
    for args in (
        ["run", stories_dir, "-p", "Once upon a time", "--max-tokens", "4"],
        ["plan", stories_dir, "--ram-budget", "900%", "--context", "64", "--json"],
        ["perplexity", stories_dir, "--text", TEXT, "--context", "128"],
    ):
        r = cli(*args, env=env)
        assert r.returncode == 0, r.stderr
        assert converting not in r.stderr
    assert len(list((tmp_path / "cache" / "models").glob("*.ellm"))) == 1


def test_two_processes_converting_the_same_directory_convert_once(stories_dir, tmp_path):
    env = dict(os.environ, EDGELLM_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "edgellm.cli.main", "inspect", str(stories_dir)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(err.count(f"converting {stories_dir} to q4") for _, err in outs) == 1, [e for _, e in outs]
    files = sorted(p.name for p in (tmp_path / "cache" / "models").iterdir())
    assert [f for f in files if f.endswith(".ellm")] and not [f for f in files if ".tmp" in f]


def test_load_takes_a_directory_and_a_share_of_the_file_as_budget(stories_dir, model, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELLM_CACHE", str(tmp_path))
    with edgellm.load(stories_dir, context=64, quant="q8") as m:
        assert m.file.path.parent == tmp_path / "models" and "-q8-" in m.file.path.name
    with edgellm.load(model, ram_budget="900%", context=64) as m:
        assert m.plan.budget == int(9 * model.stat().st_size)


def test_resolve_model_refuses_what_it_cannot_read(bad_paths):
    from edgellm.source import resolve_model

    with pytest.raises(EdgeLLMError, match="not a readable GGUF file"):
        resolve_model(bad_paths["gguf"][0])
    with pytest.raises(EdgeLLMError, match="no config.json"):
        resolve_model(bad_paths["dir"][0])
    with pytest.raises(InvalidArgumentError, match="quant"):
        resolve_model(bad_paths["text"][0], quant="q5")
    assert resolve_model(bad_paths["text"][0]) == bad_paths["text"][0]  # EllmFile names what is wrong


@pytest.mark.parametrize(
    "value,want", [("50%", 500), (" 25 % ", 250), ("2MB", 2_000_000), ("1KiB", 1024), (4096, 4096), (None, None)]
)
def test_budget_parser(value, want):
    from edgellm.runtime.budget import parse_budget

    assert parse_budget(value, 1000) == want


@pytest.mark.parametrize("value", ["abc", "-5", "0", "0%", "-10%", "nan%", "x%", True, float("inf"), -3, [1]])
def test_budget_parser_refuses(value):
    from edgellm.runtime.budget import check_budget, parse_budget

    with pytest.raises(InvalidArgumentError):
        parse_budget(value, 1000)
    with pytest.raises(InvalidArgumentError):  # the check load() runs before it opens the file
        check_budget(value)


# -- 1. the same checks at the Python API ------------------------------------------------------------------
BAD_SAMPLING = [
    dict(max_tokens=-1),
    dict(max_tokens=2.5),
    dict(temperature=-1),
    dict(temperature=float("nan")),
    dict(top_k=-3),
    dict(top_p=2),
    dict(top_p=0),
    dict(min_p=1.5),
    dict(repetition_penalty=0),
    dict(seed=-1),
    dict(stop=3),
    dict(stop=["ok", 4]),
]


@pytest.fixture(scope="module")
def loaded(model):
    with edgellm.load(model, context=64, threads=1) as m:
        yield m


@pytest.mark.parametrize("kwargs", BAD_SAMPLING, ids=[repr(k) for k in BAD_SAMPLING])
def test_api_refuses_bad_sampling_at_the_call(loaded, kwargs):
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        loaded.stream("hi", **kwargs)  # at the call, before any next()
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        loaded.generate("hi", **kwargs)
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        loaded.chat([{"role": "user", "content": "hi"}], **kwargs)
    with pytest.raises(ValueError):  # InvalidArgumentError is also a ValueError
        loaded.stream("hi", **kwargs)


def test_api_chat_refuses_an_unknown_sampling_argument(loaded):
    with pytest.raises(InvalidArgumentError, match="temprature"):
        loaded.chat([{"role": "user", "content": "hi"}], temprature=0.5)


BAD_LOAD = [
    (dict(threads=0), "threads"),
    (dict(threads=10_000), "threads"),
    (dict(threads=1.5), "threads"),
    (dict(context=0), "context"),
    (dict(context=-1), "context"),
    (dict(context=True), "context"),
    (dict(slots=0), "slots"),
    (dict(ram_budget="abc"), "RAM budget"),
    (dict(ram_budget=-5), "RAM budget"),
    (dict(quant="q5"), "quant"),
]


@pytest.mark.parametrize("kwargs,match", BAD_LOAD, ids=[repr(k) for k, _ in BAD_LOAD])
def test_api_load_refuses_bad_arguments(model, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        edgellm.load(model, **kwargs)


def test_api_replaces_lone_surrogates_instead_of_crashing_the_tokenizer(loaded):
    from edgellm.generate.params import TextReplaced

    with pytest.warns(TextReplaced, match="invalid UTF-8"):
        text = loaded.generate("Once upon a \udcff time", max_tokens=4)
    assert isinstance(text, str)
    with pytest.warns(TextReplaced):
        kept, _ = loaded.fit_chat([{"role": "user", "content": "hi \ud800"}])
    assert kept[0]["content"] == "hi \ufffd"
    with pytest.warns(TextReplaced):
        loaded.chat([{"role": "user", "content": "hi \udcfe"}], max_tokens=2)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded.generate("Once upon a time", max_tokens=2)
    assert not [w for w in seen if issubclass(w.category, TextReplaced)]  # clean text: no warning


def test_an_error_message_of_several_lines_is_printed_as_one():
    from edgellm.cli.main import one_line

    assert (
        one_line(EdgeLLMError("cannot load the tokenizer:\n  expected value\n\n at line 1"))
        == "cannot load the tokenizer:; expected value; at line 1"
    )
    assert one_line(EdgeLLMError()) == "EdgeLLMError"


# -- 3. help ------------------------------------------------------------------------------------------------------
def _subparsers():
    import argparse

    from edgellm.cli.main import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_option_help_states_its_default():
    import argparse

    bare = (argparse._HelpAction, argparse._StoreTrueAction, argparse._VersionAction)  # off / no value
    for name, p in _subparsers().items():
        text = p.format_help()
        for nonsense in ("(default: None)", "(default: False)", "(default: True)"):
            assert nonsense not in text, (name, nonsense)
        fmt = p._get_formatter()
        for a in p._actions:
            if a.option_strings and not isinstance(a, bare) and not a.required:
                assert "default" in fmt._get_help_string(a), (name, a.option_strings)


def test_device_help_lists_the_profiles_in_every_command():
    from edgellm.runtime.device import list_devices

    for name, p in _subparsers().items():
        for a in p._actions:
            if "--device" in a.option_strings:
                assert all(d in a.help for d in list_devices()) and "see devices/" not in a.help, name


def test_help_output_shows_defaults(env):
    r = cli("run", "--help", env=dict(env, COLUMNS="300"))  # wide: no line break inside what is matched
    assert r.returncode == 0 and "(default: 256)" in r.stdout and "rpi5-nvme" in r.stdout


@pytest.mark.parametrize(
    "command", ["demo", "convert", "inspect", "verify", "run", "chat", "perplexity", "bench", "plan", "analyze"]
)
def test_unknown_flag_prints_the_subcommand_usage_and_one_error_line(model, env, command):
    r = cli(command, "--bogus", env=env)
    assert_one_line_error(r)
    assert r.returncode == 2 and r.stderr.startswith(f"usage: edgellm {command} ")


def test_unknown_flag_after_valid_arguments_names_it(model, env):
    r = cli("run", model, "-p", "x", "--bogus", env=env)
    assert_one_line_error(r, "unrecognized arguments: --bogus")
    assert r.stderr.startswith("usage: edgellm run ")


# -- 4. the convert summary ------------------------------------------------------------------------------------
def test_convert_summary_names_the_file_size_beside_the_stored_chunks(stories_dir, env, tmp_path):
    out = tmp_path / "s.ellm"
    r = cli("convert", stories_dir, "-o", out, env=env)
    assert r.returncode == 0, r.stderr
    assert f"file {out.stat().st_size / 1e6:,.2f} MB" in r.stdout and "weight chunks" in r.stdout


def test_a_first_compile_is_announced_once_and_only_at_a_terminal(monkeypatch, capsys):
    """A cold kernel cache makes the first pass compile for a minute or more: at a terminal the CLI says so
    in one note, once; numba's own cache loads and other packages' functions say nothing."""
    from numba import njit
    from numba.core import event

    from edgellm.cli import main as cli_main
    from edgellm.kernels import compiling

    calls = []
    listener = compiling.on_first_compile(lambda: calls.append(1))
    try:

        def probe(n):
            return n + 1

        def other(n):
            return n + 2

        other.__module__ = "not_edgellm"
        assert njit(other)(1) == 3 and calls == []  # not one of ours
        probe.__module__ = "edgellm.probe"
        assert njit(probe)(1) == 2 and calls == [1]
        probe2 = lambda n: n * 2  # noqa: E731
        probe2.__module__ = "edgellm.probe"
        assert njit(probe2)(3) == 6 and calls == [1]  # once a process
    finally:
        event.unregister("numba:compile", listener)

    registered = []
    monkeypatch.setattr(compiling, "on_first_compile", lambda cb: registered.append(cb))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() sets its one-line notes
    for tty in (False, True):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty, raising=False)
        assert cli_main.main(["inspect", "/nonexistent/model.ellm"]) == 1
        assert len(registered) == int(tty)  # at the terminal only
    capsys.readouterr()
    registered[0]()
    assert capsys.readouterr().err == f"edgellm: note: {compiling.NOTICE}\n"
