"""The one thread that runs the model: a bounded queue of jobs, one at a time, each cancellable at every token.

The model is blocking (numba kernels), so it never runs on the event loop: a dedicated thread takes jobs in
order and iterates each one's stream, handing every Chunk to the loop through call_soon_threadsafe into the
job's asyncio.Queue. A job ends with one End item. Cancelling (the client went away, the server stops) sets a
flag the thread checks between chunks; it then closes the stream, which frees the Model's lock and leaves its
KV cache holding what was computed, so the next request starts at once and still reuses the shared prefix.
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from ..generate.stream import Chunk

DISCONNECTED, SHUTDOWN = "disconnected", "shutdown"  # why a job was cancelled


@dataclass
class End:
    """A job's last item: finished (both None), failed (`error`), or cancelled (`cancelled` says why)."""

    error: BaseException | None = None
    cancelled: str | None = None


class QueueFull(Exception):
    """More requests wait than --max-queue allows; `retry_after` estimates the seconds until there is room."""

    def __init__(self, retry_after: int):
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server is stopping and takes no new request."""


class Job:
    """One request's generation: the stream to run, and the asyncio side's queue of Chunks then one End."""

    def __init__(self, chunks: Iterator[Chunk], loop: asyncio.AbstractEventLoop):
        self.chunks = chunks
        self.out: asyncio.Queue[Chunk | End] = asyncio.Queue()
        self._loop = loop
        self._cancel = threading.Event()
        self.reason: str | None = None
        self.ended = False  # End delivered (worker side)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self, reason: str) -> None:
        if not self._cancel.is_set():
            self.reason = reason
            self._cancel.set()

    def deliver(self, item: Chunk | End) -> None:
        """From any thread: queue `item` for the event loop (dropped if the loop has already closed)."""
        try:
            self._loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    async def items(self) -> AsyncIterator[Chunk | End]:
        """The job's Chunks, then its End."""
        while True:
            item = await self.out.get()
            yield item
            if isinstance(item, End):
                return

    async def batches(self, ping_seconds: float) -> AsyncIterator[list[Chunk | End] | None]:
        """The items in lists of those that arrived together, the End last; until the first arrives (the job
        waits in the queue), None every `ping_seconds`. Only that wait has a timeout: asyncio.wait_for costs a
        task per call, too much for every token."""
        first = True
        while True:
            if first:
                try:
                    item = await asyncio.wait_for(self.out.get(), ping_seconds)
                except asyncio.TimeoutError:
                    yield None
                    continue
                first = False
            else:
                item = await self.out.get()
            items = [item]
            while not self.out.empty():
                items.append(self.out.get_nowait())
            yield items
            if isinstance(items[-1], End):
                return


@dataclass
class Counts:
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0  # refused with 429


class Worker:
    """Runs jobs one at a time on its own thread; at most `max_queue` wait behind the running one."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.counts = Counts()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._seconds = 1.0  # running mean of a job's duration, for Retry-After
        self._thread = threading.Thread(target=self._run, name="edgellm-generate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- the asyncio side ----------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue `job`; QueueFull past max_queue waiting (when something runs), ShuttingDown once stopping."""
        with self._cond:
            if self._closing:
                raise ShuttingDown()
            busy = self._running is not None or bool(self._waiting)
            if busy and len(self._waiting) >= self.max_queue:
                self.counts.rejected += 1
                raise QueueFull(self._retry_after())
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job, reason: str) -> None:
        """Stop `job`: a waiting one leaves the queue now, the running one at its next token. No-op once ended."""
        with self._cond:
            job.cancel(reason)
            if job in self._waiting:
                self._waiting.remove(job)
                self._end(job, End(cancelled=reason))

    def stop(self) -> None:
        """Take no new job, cancel the waiting ones and the running one; the thread ends once it is out."""
        with self._cond:
            self._closing = True
            for job in self._waiting:
                job.cancel(SHUTDOWN)
                self._end(job, End(cancelled=SHUTDOWN))
            self._waiting.clear()
            if self._running is not None:
                self._running.cancel(SHUTDOWN)
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def status(self) -> dict:
        with self._cond:
            return {
                "running": int(self._running is not None),
                "waiting": len(self._waiting),
                "max_queue": self.max_queue,
                **vars(self.counts),
            }

    def _retry_after(self) -> int:
        """Seconds until the queue has likely moved on by one: the mean job time times the jobs ahead."""
        ahead = len(self._waiting) + (self._running is not None)
        return max(1, min(3600, math.ceil(self._seconds * ahead)))

    def _end(self, job: Job, end: End) -> None:
        """Count and deliver a job's End (under the condition's lock)."""
        if end.cancelled:
            self.counts.cancelled += 1
        elif end.error is not None:
            self.counts.failed += 1
        else:
            self.counts.completed += 1
        job.ended = True
        job.deliver(end)

    # -- the generation thread --------------------------------------------------------------------------------
    def _take(self) -> Job | None:
        with self._cond:
            self._running = None
            while not self._waiting and not self._closing:
                self._cond.wait()
            if not self._waiting:
                return None  # closing, nothing left
            self._running = self._waiting.popleft()
            return self._running

    def _run(self) -> None:
        while (job := self._take()) is not None:
            t0 = time.perf_counter()
            end = self._generate(job)
            with self._cond:
                self._seconds = 0.7 * self._seconds + 0.3 * (time.perf_counter() - t0)
                self._running = None  # before the End reaches the client: /health then shows the model free
                self._end(job, end)

    def _generate(self, job: Job) -> End:
        """Iterate the job's stream, handing each Chunk over; stops between two tokens once cancelled."""
        finished = False
        try:
            if job.cancelled:  # cancelled while it was being taken off the queue
                return End(cancelled=job.reason)
            for chunk in job.chunks:
                job.deliver(chunk)
                finished = chunk.finish_reason is not None
                if job.cancelled and not finished:
                    return End(cancelled=job.reason)
            return End()
        except Exception as e:  # an EdgeLLMError or a bug: its client is told, the server goes on
            return End(error=e)
        finally:
            close = getattr(job.chunks, "close", None)
            if close is not None:
                close()  # frees the Model's lock now, not whenever the garbage collector gets to it
