"""Where a token's I/O time goes: bytes read, seconds reading, decompressing, computing and waiting, in total
and per unit, plus an optional timeline of events for `edgellm bench --plot`.

Written by the pager (main thread: waits, compute) and the prefetcher (its thread: reads; the decode pool:
decompression); a reader takes a snapshot with as_dict() or copies per_unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UNIT_FIELDS = ("read_s", "decompress_s", "wait_s", "compute_s")


@dataclass
class IOStats:
    bytes_read: int = 0
    read_s: float = 0.0  # the prefetch thread inside read requests (throttle included)
    decompress_s: float = 0.0  # the decode pool decompressing and checksumming chunks
    wait_s: float = 0.0  # main thread blocked waiting for a unit
    units_loaded: int = 0
    compute_s: float = 0.0  # main thread between getting a unit and releasing it
    per_unit: dict = field(default_factory=dict)  # unit -> {read_s, decompress_s, loads, wait_s, compute_s, uses}
    # (lane, unit, start, end) events, lane one of read / decompress / wait / compute, while a list is set here
    trace: list | None = None

    def unit(self, u: int) -> dict:
        rec = self.per_unit.get(u)
        if rec is None:
            rec = self.per_unit[u] = {**{k: 0.0 for k in UNIT_FIELDS}, "loads": 0, "uses": 0}
        return rec

    def event(self, lane: str, u: int, start: float, end: float) -> None:
        trace = self.trace  # read once: a reader may swap it from another thread
        if trace is not None:
            trace.append((lane, u, start, end))

    def as_dict(self) -> dict:
        io = self.read_s + self.decompress_s
        return {
            "bytes_read": self.bytes_read,
            "read_s": self.read_s,
            "decompress_s": self.decompress_s,
            "wait_s": self.wait_s,
            "compute_s": self.compute_s,
            "units_loaded": self.units_loaded,
            "overlap": max(0.0, 1.0 - self.wait_s / io) if io else 1.0,
        }
