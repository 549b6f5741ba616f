"""A process's memory baseline: what RSS it has before a model loads, so that peak RSS minus the baseline is what
a RAM budget must cover (a benchmark child, a cluster stage). The kernels are warmed first, so their compiled code
counts in the baseline and not in the budget.
"""

from __future__ import annotations

import os

import numpy as np
import psutil

from ..quant import QUANT_TYPES, QTensor


def rss() -> int:
    return psutil.Process().memory_info().rss


def reset_peak() -> bool:
    """Restart the kernel's peak-RSS mark (Linux), so the warm-up's own peak (it builds and converts a tiny
    model) does not count as the run's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak RSS since reset_peak (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    from ..generate.generate import peak_rss_bytes

    return peak_rss_bytes()


def warm_kernels(stype: str) -> None:
    """Run a tiny model of the same storage type through prefill and decode, so every kernel signature the
    real run needs is compiled or loaded from numba's cache now and counts in the baseline, not the budget."""
    import tempfile

    import edgellm

    from ..synthetic import make_checkpoint

    with tempfile.TemporaryDirectory() as d:
        src = make_checkpoint(os.path.join(d, "src"), "tiny", dtype="float16")
        quant = stype if stype in QUANT_TYPES else "q4"  # q4a comes only from a GGUF: its kernels alone below
        out = edgellm.convert(src, os.path.join(d, "m.ellm"), quant=quant, progress=False).path
        with edgellm.load(out, context=64) as m:
            m.logits([1, 5, 7, 9])
            m.generate([1, 5, 7], max_tokens=3)
            m.generate([1, 5, 7, 1, 5, 7, 1, 5], max_tokens=6, speculative=True)  # the verification passes
    if stype not in QUANT_TYPES:
        from .. import kernels

        w = QTensor.quantize(np.ones((8, 64), np.float32), stype)
        buf = np.frombuffer(bytearray(w.to_bytes()), np.uint8)  # writable, as the runtime's buffers are
        t, x, ws = QTensor.from_buffer(w.layout, buf), np.ones((2, 64), np.float32), kernels.Workspace(2, 64, 1, 1)
        kernels.matvec(t, x[0], np.zeros(8, np.float32), ws)
        kernels.matmul(t, x, np.zeros((2, 8), np.float32), ws)
