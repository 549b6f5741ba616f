"""Every ```python and ```bash / ```sh example of README.md runs, on stories260K.

The README's placeholder paths are replaced through SUBSTITUTIONS (nothing else of an example is changed), so an
example that cannot run as written fails here. Shell commands that install or take minutes are exempted one by
one in EXEMPT, each with its reason; the other commands of the same block still run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(python|bash|sh)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

# placeholder in the README -> what it stands for here (filled in by the `workdir` fixture)
SUBSTITUTIONS = {
    "path/to/hf-model": "stories260K: the Hugging Face directory in ../shared/models",
    "model.ellm": "stories260K converted to q4 in the test's working directory",
}

# shell commands (one `&&` step each) that are not run, as regex -> reason
EXEMPT = {
    r"^python3 -m venv \.venv$": "makes the environment this test already runs in (the suite installs edgellm)",
    r"^\. \.venv/bin/activate$": "activates that environment; the test runs with its own interpreter's PATH",
    r"^pip install \"\.\[(plot|test|server)\]\"$": "installs; CI runs the same install from the project's own files",
    r"^edgellm demo$": "fetches the real model from the package index (tests never download) and streams it "
    "under three budgets (tests/test_bench.py runs the real demo on ../shared's GGUF and the synthetic one)",
    r"^python -m pytest( -q)?$": "the test suite itself: this test is part of it",
    r"^edgellm serve model\.ellm$": "serves until stopped: the `server` fixture runs the same command on a free port "
    "for the examples that talk to it (tests/test_server.py tests the server itself)",
    r"^ray start --": "starts Ray's daemons on each board of a LAN; tests/test_cluster_nodes.py runs a two-node Ray "
    "cluster on this machine instead",
    r"^edgellm chat model\.ellm --cluster auto": "an interactive chat on that cluster of boards; tests/test_cluster.py "
    "runs run, bench, serve and plan with --cluster on local stage processes",
}

# the address the README's server examples talk to (edgellm serve's default), and what it stands for here
SERVER_ADDRESS = "127.0.0.1:8080"


def examples() -> list[tuple[str, str]]:
    """(language, code) of every fenced python / bash / sh block, in README order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text())]


def shell_steps(code: str) -> list[str]:
    """A shell block's commands: one per line, split at `&&` (the README keeps its commands that simple)."""
    lines = [ln.strip() for ln in code.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [step.strip() for ln in lines for step in ln.split("&&")]


def exemption(step: str) -> str | None:
    return next((why for pat, why in EXEMPT.items() if re.search(pat, step)), None)


def substitute(code: str, table: dict[str, str]) -> str:
    for placeholder, value in table.items():
        code = re.sub(rf"(?<![\w/.-]){re.escape(placeholder)}(?![\w/-])", lambda _m, v=value: v, code)
    return code


@pytest.fixture(scope="module")
def workdir(stories_dir, stories_ellm, tmp_path_factory):
    """A working directory holding model.ellm, and SUBSTITUTIONS with real paths."""
    import shutil

    d = tmp_path_factory.mktemp("readme")
    shutil.copy(stories_ellm["q4"], d / "model.ellm")
    table = {"path/to/hf-model": str(stories_dir), "model.ellm": str(d / "model.ellm")}
    assert set(table) == set(SUBSTITUTIONS)
    return d, table


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


BLOCKS = examples()


def test_readme_has_examples():
    langs = [lang for lang, _ in BLOCKS]
    assert "python" in langs and "bash" in langs


def test_tables_are_current():
    """Every placeholder and every exemption still matches something in the README (no stale entries)."""
    text = README.read_text()
    assert set(SUBSTITUTIONS) and all(p in text for p in SUBSTITUTIONS)
    assert SERVER_ADDRESS in text
    steps = [s for lang, code in BLOCKS if lang != "python" for s in shell_steps(code)]
    for pat in EXEMPT:
        assert any(re.search(pat, s) for s in steps), f"exemption {pat!r} matches no README command"


@pytest.fixture(scope="module")
def server(workdir):
    """`edgellm serve model.ellm` (as the README runs it) on a free port: its address, for SERVER_ADDRESS."""
    pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    cwd, table = workdir
    argv = [sys.executable, "-m", "edgellm.cli.main", "serve", table["model.ellm"], "--port", "0"]
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started, lines = threading.Event(), []

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode(errors="replace"))
            if " at http://127.0.0.1:" in lines[-1]:
                started.set()
        started.set()

    threading.Thread(target=read, daemon=True).start()
    started.wait(300)
    m = re.search(r" at http://(127\.0\.0\.1:\d+)/v1", "".join(lines))
    assert m, "edgellm serve did not start:\n" + "".join(lines)
    yield m.group(1)
    proc.terminate()
    assert proc.wait(60) == 0, "".join(lines)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(BLOCKS)])
def test_example_runs(index, workdir, request):
    cwd, table = workdir
    lang, code = BLOCKS[index]
    if SERVER_ADDRESS in code:  # talks to `edgellm serve`: the fixture's, on its own port
        code = code.replace(SERVER_ADDRESS, request.getfixturevalue("server"))
    if lang == "python":
        r = run([sys.executable, "-c", substitute(code, table)], cwd)
        assert r.returncode == 0, f"README python example {index} failed:\n{code}\n{r.stderr[-3000:]}"
        if "model.stream(" in code:
            # the streamed text ends before the finish line: reason, decode tok/s, bytes read, tokens per pass
            assert re.search(r"^(length|stop) [0-9.e+-]+ \d+ [0-9.]+$", r.stdout, re.MULTILINE), r.stdout
        return
    steps = [s for s in shell_steps(code) if exemption(s) is None]
    if not steps:
        pytest.skip(
            "every command of this block is exempted: " + "; ".join(f"{s!r}: {exemption(s)}" for s in shell_steps(code))
        )
    script = substitute(" && ".join(steps), table)
    r = run(["bash", "-euo", "pipefail", "-c", script], cwd)
    assert r.returncode == 0, f"README shell example {index} failed:\n{script}\n{r.stderr[-3000:]}"
