"""Ctrl-C (SIGINT): never half a file operation, and from the command line one line and exit 130.

Python turns SIGINT into KeyboardInterrupt between any two bytecodes of the main thread: between creating a
temporary file and arranging its removal, halfway through a cleanup, or just after an output was renamed
into place. Two tools:

- `held()`: a block during which SIGINT waits; one that came in meanwhile is delivered when the block ends
  (`pending()` says whether one is waiting, e.g. to skip a rename). Main thread only, as signals are.
- `run_program(main, argv)`: how the `edgellm` command runs. Its handler is installed (and SIGINT unblocked,
  should the parent have blocked it) before anything else is imported, so a Ctrl-C at any later moment -
  imports, argument parsing, the work, its cleanup - ends as the one line `edgellm: interrupted` and exit
  130. `finish()` (convert calls it the moment its output is in place) turns later Ctrl-Cs into no-ops: the
  work is done, so the command completes rather than report an interruption that undid nothing.

A Ctrl-C during the interpreter's own start-up, before edgellm's first line runs, is Python's to report.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from contextlib import contextmanager

INTERRUPTED = 130  # the exit status of a command stopped by SIGINT (128 + 2), as shells report it
MESSAGE = "edgellm: interrupted"

# Code a KeyboardInterrupt must not cut: numba compiling or loading a kernel (cut there, LLVM's state is left
# half-built and the process may crash on exit) and llvmlite's ctypes callbacks (where Python prints the
# exception as "Exception ignored" and drops it). A Ctrl-C there is delivered again RETRY seconds later, and
# is still owed should the command end first (kernels compile for seconds on a cold cache).
_NOT_THERE = ("/numba/", "/llvmlite/")
# ...and threading's Condition.wait: cut between its lock release and its `try` (CPython's wait is not
# interrupt-safe there), the `with condition:` around it then releases a lock it no longer holds and the
# Ctrl-C surfaces as "RuntimeError: cannot release un-acquired lock" (seen in convert, waiting on a
# compression future). Every wait in edgellm's main thread ends within I/O or compute time, so deferring is
# cheap; after MAX_LOCK_DEFERRALS retries (~1 s) the interrupt is raised anyway, so a stuck wait still stops.
_LOCK_FRAMES = ("wait", "wait_for", "_release_save", "_acquire_restore", "_is_owned", "__enter__", "__exit__")
MAX_LOCK_DEFERRALS = 50
RETRY = 0.02

_pending = False  # a SIGINT arrived inside held()
_finished = False  # run_program's command has done its work: later SIGINTs change nothing
_owed = False  # a SIGINT put off (see _NOT_THERE) and not raised yet
_lock_deferrals = 0  # consecutive put-offs inside threading (see _LOCK_FRAMES)


def _hold(signum, frame) -> None:
    global _pending
    _pending = True


def _program_handler(signum, frame) -> None:
    global _owed, _lock_deferrals
    if _finished:
        return
    in_lock = _in_threading_wait(frame) and _lock_deferrals < MAX_LOCK_DEFERRALS
    if _inside(frame, _NOT_THERE) or in_lock:
        _lock_deferrals += in_lock
        _owed = True
        _again_soon()
        return
    _owed, _lock_deferrals = False, 0
    raise KeyboardInterrupt


def _in_threading_wait(frame) -> bool:
    return (
        frame is not None
        and frame.f_code.co_filename.replace("\\", "/").endswith("/threading.py")
        and frame.f_code.co_name in _LOCK_FRAMES
    )


def _inside(frame, places) -> bool:
    while frame is not None:
        name = frame.f_code.co_filename.replace("\\", "/")
        if any(p in name for p in places):
            return True
        frame = frame.f_back
    return False


def _again_soon() -> None:
    """SIGINT once more, RETRY seconds from now: a timer signal (no thread to start from inside a callback)."""
    if hasattr(signal, "setitimer"):
        signal.signal(signal.SIGALRM, _retry)
        signal.setitimer(signal.ITIMER_REAL, RETRY)
    else:
        timer = threading.Timer(RETRY, _thread.interrupt_main, args=(signal.SIGINT,))
        timer.daemon = True
        timer.start()


def _retry(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)  # held() may have taken over meanwhile, or the exit ignores it
    if callable(handler):
        handler(signal.SIGINT, frame)


def _unraisable(hook) -> None:
    """A KeyboardInterrupt raised where Python cannot pass it on (a __del__, a callback from C) would be
    printed as "Exception ignored" and lost: deliver it again in a moment instead."""
    global _owed
    if hook.exc_type is not None and issubclass(hook.exc_type, KeyboardInterrupt):
        _owed = True
        _again_soon()
    else:
        sys.__unraisablehook__(hook)


def checkpoint() -> None:
    """A place where stopping is clean (generate.stream calls it between two tokens): raise the Ctrl-C
    run_program's handler put off, now. The retries land RETRY seconds apart and, while kernels compile on a
    cold cache, nearly always inside numba again: without checkpoints a reply went on streaming for 20-30 s
    after Ctrl-C. Nothing elsewhere: in a library user's process, or a thread other than the main one (the
    server's generation thread)."""
    global _owed, _lock_deferrals
    if (
        _owed
        and not _finished
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is _program_handler
    ):
        _owed, _lock_deferrals = False, 0
        raise KeyboardInterrupt


def pending() -> bool:
    """Whether a Ctrl-C came in during the current held() block (it is delivered when the block ends)."""
    return _pending


@contextmanager
def held():
    """Hold SIGINT back while the block runs, then deliver it to the handler that was there before. Outside
    the main thread, inside another held() block, where Ctrl-C is ignored anyway or under a handler not set
    from Python: a plain block."""
    global _pending
    current = signal.getsignal(signal.SIGINT)
    if (
        threading.current_thread() is not threading.main_thread()
        or current in (_hold, None, signal.SIG_IGN)
        or (current is _program_handler and _finished)
    ):
        yield
        return
    _pending = False
    previous = signal.signal(signal.SIGINT, _hold)  # a Ctrl-C before this line is raised before the block
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if _pending:
            _pending = False
            signal.raise_signal(signal.SIGINT)  # now: KeyboardInterrupt, or whatever `previous` does


def finish() -> None:
    """The command's output is complete: from now on a Ctrl-C no longer interrupts run_program's command."""
    global _finished
    _finished = True


def run_program(main, argv: list[str]) -> int:
    """`main(argv)` as the whole process: a Ctrl-C anywhere ends in MESSAGE on stderr and INTERRUPTED."""
    global _finished, _owed, _lock_deferrals
    _finished = _owed = False
    _lock_deferrals = 0
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # started with Ctrl-C ignored (nohup): stay so
        signal.signal(signal.SIGINT, _program_handler)
        sys.unraisablehook = _unraisable
    try:
        if hasattr(signal, "pthread_sigmask"):  # one our parent held back is delivered here
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        code = main(argv)
        if _owed and not _finished:  # the command ended before a put-off Ctrl-C could land
            raise KeyboardInterrupt
        return code
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(MESSAGE, file=sys.stderr, flush=True)
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # on the way out: a late Ctrl-C changes nothing
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)  # nor a retry still on its way
