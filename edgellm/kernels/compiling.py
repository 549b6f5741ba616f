"""Telling a person at a terminal that the kernels are compiling. On a cold numba cache (a first run, another
CPU, a new edgellm version) the first pass compiles them: 56 s before SmolLM2's first word from `edgellm run`
on a Zen 3 core, longer on a Pi. Silent, that looks like a hang.

numba announces each compilation it really does (a kernel loaded from its cache is not one) as a
"numba:compile" event; the first for one of edgellm's kernels calls the callback, once per process.
"""

from __future__ import annotations

from collections.abc import Callable

from numba.core import event

NOTICE = "compiling the kernels for this CPU, once (a minute or more); later runs load them from the cache"


class _FirstCompile(event.Listener):
    def __init__(self, callback: Callable[[], None]):
        self.callback, self.told = callback, False

    def on_start(self, ev: event.Event) -> None:
        if self.told:
            return
        dispatcher = (ev.data or {}).get("dispatcher")
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if module.startswith("edgellm."):
            self.told = True
            self.callback()

    def on_end(self, ev: event.Event) -> None:
        pass


def on_first_compile(callback: Callable[[], None]) -> event.Listener:
    """Call callback() when this process first compiles one of edgellm's kernels (not at all when every kernel
    comes from numba's cache). Returns the listener, for numba.core.event.unregister."""
    listener = _FirstCompile(callback)
    event.register("numba:compile", listener)
    return listener
