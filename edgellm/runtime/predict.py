"""Predicted decode speed of a plan on a device: the slower of reading the streamed bytes from its flash and
computing every weight with its CPU."""
from __future__ import annotations

# Decode speed of this host's kernels inside a whole model, GB/s of stored weight bytes on 2 threads
# (tools/bench_kernels.py on the TinyLlama-shaped file: q4 15.3, q8 21.0); a device's cpu_scale scales it.
HOST_KERNEL_GB_S = {"q4": 15.0, "q8": 20.0, "f16": 8.0, "f32": 12.0}
HOST_DISK_MB_S = 750.0        # this machine's cold sequential reads (FACTS.md), for the `host` profile


def predict(plan, device, stype: str, weight_bytes: int) -> dict:
    """Tokens/s bounds: flash (streamed bytes / bandwidth + per-read latency) and compute (all weights)."""
    streamed = plan.streamed_bytes_per_pass
    bw = (device.read_mb_s if device and device.read_mb_s else HOST_DISK_MB_S) * 1e6
    io_s = streamed / bw + len(plan.streamed) * (device.read_latency_us if device else 0) / 1e6
    compute_s = weight_bytes / (HOST_KERNEL_GB_S.get(stype, 4.0) * 1e9 * (device.cpu_scale if device else 1.0))
    return {"io_seconds": io_s, "compute_seconds": compute_s,
            "flash_bound_tps": 1 / io_s if io_s else float("inf"),
            "predicted_tps": 1 / max(io_s, compute_s, 1e-9)}
