"""Ctrl-C (SIGINT) at any moment: held() and the writer in-process, then `edgellm convert`, `bench` and
piped `chat` interrupted for real, as a terminal would (SIGINT to the command's process group).

A command is started with SIGINT blocked, as if its parent held it back. The interpreter's own start-up
(before edgellm's first line runs) is no moment a program can handle; edgellm's first act is to install its
handler and unblock SIGINT, visible in /proc as SigBlk clearing. Delays count from then, and one trial sends
its Ctrl-C before then, so that it is delivered at that first line. The delays come from a fixed seed; a
failure names its delay.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

import edgellm
from edgellm.format import EllmFile, writer
from edgellm.interrupts import held, pending
from edgellm.synthetic import SyntheticConfig, make_checkpoint

INTERRUPTED = "edgellm: interrupted\n"
PROGRESS = re.compile(r"(running|re-encoding) .* \.\.\.$")  # bench's progress lines on stderr


def edgellm_cmd() -> list[str]:
    """The console script itself where it is installed beside this interpreter."""
    script = Path(sys.executable).with_name("edgellm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "edgellm.cli.main"]


def spawn(args, **kw) -> subprocess.Popen:
    """Start edgellm in its own process group with SIGINT blocked (see the module docstring)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return subprocess.Popen(
            [*edgellm_cmd(), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **kw,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def took_over(p: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until edgellm has taken SIGINT over (unblocked it), or has exited."""
    end = time.monotonic() + timeout
    while p.poll() is None:
        try:
            status = Path(f"/proc/{p.pid}/status").read_text()
        except FileNotFoundError:
            return
        blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)", status, re.M).group(1), 16)
        if not blocked & (1 << (signal.SIGINT - 1)):
            return
        assert time.monotonic() < end, "edgellm never took SIGINT over"
        time.sleep(0.002)


def ctrl_c(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGINT)
    except ProcessLookupError:  # it had already finished
        pass


def leftovers(d: Path) -> list[str]:
    return sorted(os.listdir(d))


# -- held() and the writer, in-process -------------------------------------------------------------------
def test_held_delivers_a_ctrl_c_when_the_block_ends():
    before, steps = signal.getsignal(signal.SIGINT), []
    with pytest.raises(KeyboardInterrupt):
        with held():
            signal.raise_signal(signal.SIGINT)  # a Ctrl-C now: held back
            steps.append(pending())
            steps.append("after")
    assert steps == [True, "after"]
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored
    with held():
        pass  # nothing came in: nothing delivered
    assert not pending()


def test_held_keeps_an_ignored_ctrl_c_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held():
            signal.raise_signal(signal.SIGINT)
            assert not pending()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_put_off_inside_numba_is_raised_at_the_next_checkpoint(monkeypatch):
    """A Ctrl-C landing while numba compiles is put off (its retries land in the compile again and again on a
    cold cache); checkpoint(), between two tokens of a reply, raises it there. Without one owed, or outside the
    edgellm command's handler, checkpoint() does nothing."""
    import types

    from edgellm import interrupts

    monkeypatch.setattr(interrupts, "_again_soon", lambda: None)
    monkeypatch.setattr(interrupts, "_finished", False)
    monkeypatch.setattr(interrupts, "_owed", False)
    previous = signal.signal(signal.SIGINT, interrupts._program_handler)
    try:
        interrupts.checkpoint()  # nothing owed
        in_numba = types.SimpleNamespace(f_code=types.SimpleNamespace(co_filename="/x/numba/core/compiler.py",
                                                                      co_name="compile"), f_back=None)  # fmt: skip
        interrupts._program_handler(signal.SIGINT, in_numba)  # put off: no exception
        assert interrupts._owed
        with pytest.raises(KeyboardInterrupt):
            interrupts.checkpoint()
        assert not interrupts._owed
        interrupts.checkpoint()  # raised once only
        interrupts._program_handler(signal.SIGINT, in_numba)
        elsewhere = __import__("threading").Thread(target=interrupts.checkpoint)  # the server's generation thread
        elsewhere.start()
        elsewhere.join()
        assert interrupts._owed  # ...leaves it to the main thread
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a library user's process: not ours to raise
        interrupts.checkpoint()
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("intr") / "src", "tiny", dtype="float16")


def test_ctrl_c_inside_a_condition_wait_is_put_off_then_raised(monkeypatch):
    """CPython's Condition.wait is not interrupt-safe between releasing its lock and its `try`: the handler
    puts a Ctrl-C off while the main thread is inside threading's wait, but never for more than ~1 s."""
    import threading

    from edgellm import interrupts

    cv, started = threading.Condition(), threading.Event()

    def waiter():
        with cv:
            started.set()
            cv.wait(5)

    t = threading.Thread(target=waiter)
    t.start()
    started.wait(5)
    time.sleep(0.05)
    frame = sys._current_frames()[t.ident]  # innermost: threading's wait
    assert interrupts._in_threading_wait(frame) and not interrupts._in_threading_wait(sys._getframe())
    monkeypatch.setattr(interrupts, "_again_soon", lambda: None)
    monkeypatch.setattr(interrupts, "_lock_deferrals", 0)
    monkeypatch.setattr(interrupts, "_finished", False)
    for _ in range(interrupts.MAX_LOCK_DEFERRALS):
        interrupts._program_handler(signal.SIGINT, frame)  # put off: no exception
    assert interrupts._owed
    with pytest.raises(KeyboardInterrupt):
        interrupts._program_handler(signal.SIGINT, frame)
    assert interrupts._lock_deferrals == 0
    with cv:
        cv.notify()
    t.join(5)
    monkeypatch.setattr(interrupts, "_owed", False)


def test_ctrl_c_during_the_rename_leaves_the_complete_file(tiny_src, tmp_path, monkeypatch):
    """The signal lands while os.replace runs: the rename stands, on_commit runs, then KeyboardInterrupt."""
    real_replace, seen = os.replace, []

    def replace_interrupted(a, b):
        real_replace(a, b)
        signal.raise_signal(signal.SIGINT)
        seen.append("renamed")

    monkeypatch.setattr(writer.os, "replace", replace_interrupted)
    out = tmp_path / "m.ellm"
    with pytest.raises(KeyboardInterrupt):
        edgellm.convert(tiny_src, out, progress=False, on_commit=lambda: seen.append("committed"))
    assert seen == ["renamed", "committed"]
    assert leftovers(tmp_path) == ["m.ellm"]
    with EllmFile(out) as f:
        f.verify()


def test_ctrl_c_while_closing_wins_over_the_rename(tiny_src, tmp_path, monkeypatch):
    """The signal lands while the compression threads are joined, just before the rename: no output."""
    real_shutdown = ThreadPoolExecutor.shutdown

    def shutdown_interrupted(self, *a, **kw):
        real_shutdown(self, *a, **kw)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(ThreadPoolExecutor, "shutdown", shutdown_interrupted)
    committed = []
    with pytest.raises(KeyboardInterrupt):
        edgellm.convert(tiny_src, tmp_path / "m.ellm", progress=False, on_commit=lambda: committed.append(1))
    assert committed == [] and leftovers(tmp_path) == []


def test_ctrl_c_during_fsync_removes_the_temporary_file(tiny_src, tmp_path, monkeypatch):
    def fsync_interrupted(fd):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(writer.os, "fsync", fsync_interrupted)
    with pytest.raises(KeyboardInterrupt):
        edgellm.convert(tiny_src, tmp_path / "m.ellm", progress=False)
    assert leftovers(tmp_path) == []


def test_a_writer_cut_short_before_its_cleanup_loses_its_file_at_exit(tmp_path):
    """Should a KeyboardInterrupt skip __exit__ altogether, the interpreter's exit still removes the file."""
    code = (
        "import sys; from edgellm.format.writer import Writer; "
        "w = Writer(sys.argv[1], {}, []); w.__enter__(); "
        "import os; assert os.listdir(os.path.dirname(sys.argv[1])); raise KeyboardInterrupt"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.ellm")], capture_output=True, text=True)
    assert "KeyboardInterrupt" in r.stderr and "AssertionError" not in r.stderr
    assert leftovers(tmp_path) == []


# -- edgellm convert -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def convert_src(tmp_path_factory):
    """A checkpoint (~50 MB of f16) whose conversion takes about a second."""
    cfg = SyntheticConfig(
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=3,
        num_attention_heads=12,
        num_key_value_heads=4,
        vocab_size=8192,
        tie_word_embeddings=False,
        rope_theta=1e4,
        max_position_embeddings=256,
    )
    return make_checkpoint(tmp_path_factory.mktemp("intr-src") / "src", cfg, dtype="float16")


def test_convert_ctrl_c_at_random_moments(convert_src, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.ellm"
    p = spawn(["convert", convert_src, "-o", out])
    took_over(p)
    t0 = time.perf_counter()
    _, err = p.communicate(timeout=300)
    whole = time.perf_counter() - t0  # imports + conversion + exit, on this machine now
    assert p.returncode == 0, err
    out.unlink()

    rng = random.Random(11)
    # most delays anywhere in the run; a third around its end (last chunks, header, fsync, rename, exit)
    # (None: before edgellm's first line)
    delays = [None] + [rng.uniform(0, whole) for _ in range(15)] + [whole + rng.uniform(-0.3, 0.05) for _ in range(8)]
    outcomes = []
    for d in delays:
        p = spawn(["convert", convert_src, "-o", out])
        if d is not None:
            took_over(p)
            time.sleep(max(d, 0.0))
        ctrl_c(p)
        stdout, stderr = p.communicate(timeout=300)
        when = "before edgellm's first line" if d is None else f"{d:.3f} s after it, of {whole:.3f}"
        where = f"Ctrl-C {when}: exit {p.returncode}, stderr {stderr!r}"
        assert "Traceback" not in stderr, where
        if p.returncode == 130:
            assert stderr == INTERRUPTED and stdout == "", where
            assert leftovers(out_dir) == [], where  # no output, no temporary file
        else:
            assert p.returncode == 0 and stderr == "" and stdout.startswith(f"wrote {out}"), where
            assert leftovers(out_dir) == ["m.ellm"], where
            with EllmFile(out) as f:
                f.verify()
            out.unlink()
        outcomes.append(p.returncode)
    assert 130 in outcomes


# -- edgellm bench ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("intr-bench")
    return edgellm.convert(make_checkpoint(root / "src", "tiny", dtype="float16"), root / "m.ellm", progress=False).path


def _bench_children(p: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(p.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_a_child(p: subprocess.Popen, timeout: float = 60.0) -> list[psutil.Process]:
    """Poll until bench has a live child (the lz4 sweep re-encodes a copy first, which takes a while)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _bench_children(p)
        if any(_alive(c) for c in children):
            return children
        time.sleep(0.005)
    raise AssertionError(f"bench started no child within {timeout} s")


@pytest.mark.parametrize("sweep", [[], ["--sweep", "codec=raw,lz4"]], ids=["one", "codec-sweep"])
def test_bench_ctrl_c_stops_and_reaps_its_children(bench_model, tmp_path, sweep):
    """Ctrl-C during start-up, then at random moments after the first child started: one line, exit 130,
    every child gone, no temporary file or re-encoded copy left, no traceback from parent or child."""
    rng = random.Random(5 if sweep else 3)
    cut_a_child = 0
    for trial in range(3):
        d = tmp_path / f"t{trial}"
        (d / "tmp").mkdir(parents=True)
        model = d / "m.ellm"
        model.write_bytes(bench_model.read_bytes())
        p = spawn(
            ["bench", model, "--prompt-tokens", "8", "--gen-tokens", "4", *sweep],
            env=dict(os.environ, TMPDIR=str(d / "tmp")),
        )
        children = []
        took_over(p)
        if trial == 0:
            time.sleep(rng.uniform(0, 0.5))  # the parent's own imports
        else:
            first = p.stderr.readline()  # a child is being started (or a copy re-encoded)
            assert PROGRESS.match(first.rstrip("\n")), first
            if trial == 1:  # the moment a child is seen alive: this Ctrl-C surely cuts one
                children = _wait_for_a_child(p)
            else:  # a random moment; a child lives ~1-3 s depending on the machine
                time.sleep(rng.uniform(0, 3.0))
                children = _bench_children(p)
            cut_a_child += any(_alive(c) for c in children)
        ctrl_c(p)
        stdout, stderr = p.communicate(timeout=120)
        stderr = (first if trial else "") + stderr
        where = f"trial {trial}: exit {p.returncode}, stderr {stderr!r}"
        assert "Traceback" not in stderr, where
        assert [c.pid for c in children if _alive(c)] == [], where
        assert leftovers(d) == ["m.ellm", "tmp"] and leftovers(d / "tmp") == [], where
        if p.returncode == 130:
            lines = stderr.splitlines()
            assert lines[-1] == INTERRUPTED.strip() and all(PROGRESS.match(x) for x in lines[:-1]), where
        else:
            assert p.returncode == 0 and "decode tok/s" in stdout, where
    assert cut_a_child  # a Ctrl-C did land while a child ran


# -- edgellm chat, piped -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [[], ["--jsonl"]], ids=["plain", "jsonl"])
@pytest.mark.parametrize("when", ["waiting", "replying"])
def test_piped_chat_ctrl_c_is_one_line_and_130(stories_ellm, mode, when):
    p = spawn(
        [
            "chat",
            stories_ellm["q4"],
            "--chat-template",
            "plain",
            "--threads",
            "1",
            "--max-tokens",
            "100000",
            "--context",
            "512",
            *mode,
        ],
        stdin=subprocess.PIPE,
    )

    def send(line: str) -> None:
        p.stdin.write(line + "\n")
        p.stdin.flush()

    def read_until(marker: str) -> None:
        got = ""
        while marker not in got:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            got += line

    if mode:  # --jsonl: the loop runs once /stats is answered
        send("/stats")
        read_until('"command": "/stats"')
    send("Once upon a time")
    if when == "waiting":  # the reply is over: reading the next line
        send("/stats") if mode else None
        read_until('"command": "/stats"' if mode else "\x1e")
    elif mode:
        time.sleep(0.05)  # a JSON reply is written whole, at its end
    else:
        assert p.stdout.read(1)  # the reply has started
    ctrl_c(p)
    _, stderr = p.communicate(timeout=120)
    assert (p.returncode, stderr) == (130, INTERRUPTED)
