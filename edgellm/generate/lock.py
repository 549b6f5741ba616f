"""One lock per Model, so calls that touch its KV cache run one at a time.

A call holds the lock for its whole duration; a stream iterator from its first next() until it is exhausted,
closed or garbage collected. Other threads wait their turn. The thread holding the lock through an unfinished
iterator would wait for itself, so its next call raises ModelBusyError instead.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Generator, Iterator

from ..errors import ModelBusyError

BUSY = (
    "this thread has an unfinished stream() / chat(stream=True) iterator on this Model; read it to the end "
    "or call its .close() before the next call"
)


class ModelLock:
    """A threading.Lock that knows which thread holds it and which stream iterator holds it for that thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.owner: int | None = None  # thread id of the holder
        self.stream: weakref.ref[LockedStream] | None = (
            None  # weakref to the LockedStream holding the lock, if one does
        )

    def check(self) -> None:
        """Raise ModelBusyError if this thread holds the lock (waiting for it would deadlock)."""
        if self.owner == threading.get_ident():
            raise ModelBusyError(BUSY)

    def __enter__(self):
        self.check()
        self._lock.acquire()  # other threads wait here
        self.owner = threading.get_ident()
        return self

    def __exit__(self, *exc) -> None:
        # a Lock (unlike an RLock) may be released from another thread: the garbage collector may finalize
        # an abandoned iterator anywhere
        self.owner = self.stream = None
        self._lock.release()

    def close_own_stream(self) -> None:
        """Close the iterator through which this thread holds the lock, if any (Model.close uses it)."""
        s = self.stream() if self.stream is not None else None
        if s is not None and self.owner == threading.get_ident():
            s.close()


def _hold(lock: ModelLock, chunks: Iterator) -> Generator:
    # a plain function, not a method: its frame must not point back at the LockedStream, or an abandoned
    # iterator would sit in a reference cycle (holding the lock) until the cyclic garbage collector ran
    with lock:
        yield from chunks


class LockedStream:
    """The iterator stream() and chat(stream=True) return. Its first next() takes the Model's lock (waiting for
    other threads); it keeps it until exhausted, close()d, or garbage collected. A context manager that closes
    it. If this thread already holds the lock, next() raises ModelBusyError and this iterator stays unstarted,
    so it can be read once the other one is finished or closed."""

    def __init__(self, lock: ModelLock, chunks: Iterator):
        self._lock = lock
        self._gen: Generator = _hold(lock, chunks)
        self._started = False

    def __iter__(self):
        return self

    def __next__(self):
        if not self._started:
            self._lock.check()  # before starting, so a busy error leaves this iterator usable
            self._started = True
            item = next(self._gen)  # takes the lock, runs the prefill
            self._lock.stream = weakref.ref(self)
            return item
        return next(self._gen)

    def close(self) -> None:
        """Stop generating and release the Model; the KV cache keeps the tokens computed so far."""
        self._gen.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
