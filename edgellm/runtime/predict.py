"""Predicted decode speed of a plan on a device: the slower of reading the streamed bytes from its flash and
computing one token with its CPU.

A token's compute is its weight bytes through the kernels plus a fixed cost per layer and per token (kernel
dispatch, norms, rope, attention at short context, sampling, detokenizing). The fixed part is what bounds a
small model: without it stories260K (0.15 MB of weights) was predicted at 100,000 tok/s where the host runs
it at ~2,500.
"""

from __future__ import annotations

# Decode speed of this host's kernels inside a whole model, GB/s of stored weight bytes on 2 threads
# (tools/bench_kernels.py on the TinyLlama-shaped file: q4 15.3, q8 21.0); a device's cpu_scale scales it.
HOST_KERNEL_GB_S = {"q4": 15.0, "q4a": 15.0, "q8": 20.0, "f16": 8.0, "f32": 12.0}
HOST_DISK_MB_S = 750.0  # this machine's cold sequential reads (FACTS.md), for the `host` profile
# Fixed compute on this host, scaled by a device's cpu_scale. Measured with Transformer.forward on synthetic
# 64-wide q4 models of 2 and 12 layers (1 and 2 threads): 47-54 us per layer, ~15 us besides; the generation
# loop (sampling, detokenizer) adds ~35 us per token. Rounded up: these are the floor, not a typical figure.
LAYER_OVERHEAD_S = 60e-6
TOKEN_OVERHEAD_S = 60e-6
# A kernel never streams weights faster than this share of the memory bandwidth (host: 15.3 of 23 GB/s).
KERNEL_MEM_EFFICIENCY = 0.7


def compute_seconds(weight_bytes: int, n_layers: int, stype: str, device=None) -> float:
    """Seconds one decoded token computes on `device` (None: this host)."""
    scale = device.cpu_scale if device and device.cpu_scale else 1.0
    gb_s = HOST_KERNEL_GB_S.get(stype, 4.0) * scale
    if device and device.mem_bw_gb_s:
        gb_s = min(gb_s, device.mem_bw_gb_s * KERNEL_MEM_EFFICIENCY)
    return weight_bytes / (gb_s * 1e9) + (n_layers * LAYER_OVERHEAD_S + TOKEN_OVERHEAD_S) / scale


def read_requests(plan) -> int:
    """Read requests per token, as the prefetcher issues them (counted per unit by costs.unit_costs)."""
    return sum(plan.costs[u].reads for u in plan.streamed)


def predict(plan, device, stype: str, weight_bytes: int) -> dict:
    """Tokens/s bounds: flash (streamed bytes / bandwidth + latency per read request) and compute (all weights
    plus the fixed per-layer and per-token cost); predicted is the slower of the two."""
    streamed = plan.streamed_bytes_per_pass
    bw = (device.read_mb_s if device and device.read_mb_s else HOST_DISK_MB_S) * 1e6
    io_s = streamed / bw + read_requests(plan) * (device.read_latency_us if device else 0) / 1e6
    n_layers = max(len(plan.costs) - 1, 0)
    compute_s = compute_seconds(weight_bytes, n_layers, stype, device)
    return {
        "io_seconds": io_s,
        "compute_seconds": compute_s,
        "flash_bound_tps": 1 / io_s if io_s else float("inf"),
        "compute_bound_tps": 1 / compute_s,
        "predicted_tps": 1 / max(io_s, compute_s),
    }
