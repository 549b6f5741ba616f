"""`edgellm bench`: where every millisecond and byte of a token goes, for one configuration or a sweep.

Each configuration runs in its own process (edgellm.bench.child), so peak RSS is measured against that
process's own baseline and a cold page cache means cold. JSON result (`--json FILE`):

    {"model", "device", "prompt_tokens", "gen_tokens", "repeat", "cold", "threads", "sweep": {key: [values]},
     "runs": [{
        "config": {"budget": "50%", "codec": "zstd", ...},   # the swept values of this row
        "budget_bytes", "plan_bytes", "streamed_units", "pinned_units",
        "streamed_bytes_per_token",                          # what the plan reads from flash per token
        "load_s", "ttft_s", "prefill_tps", "decode_tps":     {"mean", "sd", "values": [...]} each,
        "decode_bytes_per_token",                            # measured, decode phase
        "read_s", "decompress_s", "compute_s", "wait_s",     # per decoded token, first repeat
        "overlap",                                           # share of read+decompress hidden behind compute
        "peak_rss_bytes", "rss_over_baseline_bytes", "baseline_rss_bytes",
        "predicted_tps", "flash_bound_tps", "measured_vs_predicted",
        "ratio_vs_first",                                    # decode tok/s / the first row's
        "per_layer": [{"unit", "streamed", "read_s", "decompress_s", "compute_s", "wait_s"}],   # per token
        "trace": [[lane, unit, start_s, end_s]], "token_times": [s],   # a few decode tokens, for --plot
        "error": str                                         # only when the configuration failed
     }]}
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
from pathlib import Path

from ..errors import EdgeLLMError
from ..runtime.budget import parse_budget
from .runner import run_child

SWEEP_KEYS = ("budget", "codec", "speculative")
SPECULATIVE = {"on": True, "off": False}
CODECS = ("raw", "lz4", "zstd", "auto")


def parse_sweep(specs: list[str] | None) -> dict[str, list[str]]:
    """["budget=25%,50%", "codec=raw,zstd"] -> {"budget": ["25%", "50%"], "codec": ["raw", "zstd"]}."""
    out: dict[str, list[str]] = {}
    for spec in specs or []:
        key, eq, values = spec.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or key not in SWEEP_KEYS or not vals:
            raise EdgeLLMError(
                f"cannot read --sweep {spec!r}: use budget=25%,50%,..., codec=raw,lz4,zstd or speculative=off,on"
            )
        if key == "codec" and (bad := [v for v in vals if v not in CODECS]):
            raise EdgeLLMError(f"unknown codec {bad[0]!r} in --sweep; choose from {', '.join(CODECS)}")
        if key == "speculative" and (bad := [v for v in vals if v not in SPECULATIVE]):
            raise EdgeLLMError(f"unknown speculative {bad[0]!r} in --sweep; choose from off, on")
        out[key] = vals
    return out


def budget_bytes(value, model_bytes: int) -> int | None:
    """A budget as bytes: "50%" is half the model file; None is the runtime's default (one parser for all)."""
    return parse_budget(value, model_bytes)


def _summary(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def _row(config: dict, r: dict) -> dict:
    if "error" in r:
        return {"config": config, "error": r["error"]}
    reps = r["repeats"]
    steps = max(r["generated_tokens"] - 1, 1)
    pred = r["predicted"]
    decode = _summary([x["decode_tps"] for x in reps])
    return {
        "config": config,
        "budget_bytes": r["budget"],
        "plan_bytes": r["plan_total"],
        "streamed_units": len(r["streamed"]),
        "pinned_units": len(r["pinned"]),
        "streamed_bytes_per_token": r["streamed_bytes_per_token"],
        "load_s": _summary([x["load_s"] for x in reps]),
        "ttft_s": _summary([x["ttft_s"] for x in reps]),
        "prefill_tps": _summary([x["prompt_tps"] for x in reps]),
        "decode_tps": decode,
        "tokens_per_pass": statistics.fmean(x.get("tokens_per_pass", 1.0) for x in reps),
        "decode_bytes_per_token": statistics.fmean(x["decode_bytes_per_token"] for x in reps),
        "read_s": r["read_s"] / steps,
        "decompress_s": r["decompress_s"] / steps,
        "compute_s": r["compute_s"] / steps,
        "wait_s": r["wait_s"] / steps,
        "overlap": r["overlap"],
        "peak_rss_bytes": r["peak_rss"],
        "rss_over_baseline_bytes": r["rss_over_baseline"],
        "baseline_rss_bytes": r["baseline_rss"],
        "page_cache_dropped": r.get("page_cache_dropped"),
        "predicted_tps": pred["predicted_tps"],
        "flash_bound_tps": pred["flash_bound_tps"],
        "measured_vs_predicted": decode["mean"] / pred["predicted_tps"] if pred["predicted_tps"] else None,
        "per_layer": r["per_layer"],
        "trace": r.get("trace", []),
        "token_times": r.get("token_times", []),
    }


def run_bench(
    model,
    *,
    ram_budget=None,
    device=None,
    prompt_tokens: int = 128,
    gen_tokens: int = 64,
    repeat: int = 1,
    cold: bool = False,
    threads: int | None = None,
    context: int | None = None,
    sweep: dict[str, list[str]] | None = None,
    trace_tokens: int = 4,
    speculative: bool | None = None,
    draft=None,
    progress=None,
) -> dict:
    """Run every configuration of the sweep (the cartesian product of its keys) and return the JSON result.
    `draft`: a draft model's .ellm path, loaded beside the model in every configuration (load(draft=...))."""
    path = Path(model)
    if not path.is_file():
        raise EdgeLLMError(f"{model}: no such file")
    if prompt_tokens < 1 or gen_tokens < 2 or repeat < 1:
        raise EdgeLLMError("--prompt-tokens must be >= 1, --gen-tokens >= 2 and --repeat >= 1")
    from ..format import EllmFile
    from ..runtime.device import load_device

    with EllmFile(path) as f:  # also validates the file before any child starts
        model_bytes = f.size
        max_ctx = int(f.config.get("max_position_embeddings") or 2048)
    if device is not None:
        load_device(device)
    sweep = sweep or {}
    keys = list(sweep)
    combos = list(itertools.product(*(sweep[k] for k in keys))) or [()]
    ctx = context or min(max_ctx, prompt_tokens + gen_tokens + 16)
    base = {
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "repeat": repeat,
        "cold": cold,
        "threads": threads,
        "device": device,
        "context": ctx,
        "trace_tokens": trace_tokens,
        "speculative": speculative,
        "draft": str(draft) if draft is not None else None,
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="edgellm-bench-", dir=_tmp_dir(path)) as tmp:
        recoded: dict[str, str] = {}
        for combo in combos:
            config = dict(zip(keys, combo))
            file = str(path)
            if "codec" in config:
                file = recoded.get(config["codec"]) or _recode(path, config["codec"], tmp, device, progress)
                recoded[config["codec"]] = file
            budget = budget_bytes(config.get("budget", ram_budget), model_bytes)
            if progress:
                progress(f"running {_label(config) or 'configuration'} ...")
            spec = SPECULATIVE[config["speculative"]] if "speculative" in config else speculative
            r = run_child(dict(base, model=file, budget=budget, speculative=spec), cold=cold)
            runs.append(_row(config, r))
    first = next((x for x in runs if "error" not in x), None)
    for x in runs:
        if "error" not in x and first is not None:
            x["ratio_vs_first"] = x["decode_tps"]["mean"] / first["decode_tps"]["mean"]
    return {
        "model": str(path),
        "model_bytes": model_bytes,
        "device": device or "host",
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "repeat": repeat,
        "cold": cold,
        "threads": threads,
        "context": ctx,
        "budget": ram_budget,
        "sweep": sweep,
        "runs": runs,
    }


def _tmp_dir(path: Path) -> str:
    """Re-encoded copies go beside the model (same disk, so codec comparisons read from the same flash)."""
    return str(path.parent) if os.access(path.parent, os.W_OK) else tempfile.gettempdir()


def _recode(path: Path, codec: str, tmp: str, device, progress) -> str:
    from ..format.recode import recode
    from ..runtime.device import load_device

    out = os.path.join(tmp, f"{path.stem}-{codec}.ellm")
    if progress:
        progress(f"re-encoding {path.name} with {codec} ...")
    recode(path, out, codec, device=load_device(device) if device else None)
    return out


def _label(config: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


def format_table(result: dict) -> str:
    """One line per configuration; ratios against the first row."""
    head = (
        f"{'config':<22} {'load s':>7} {'TTFT ms':>8} {'prefill':>8} {'decode tok/s':>14} {'tok/pass':>8} "
        f"{'MB/token':>9} "
        f"{'overlap':>8} {'RSS MB':>8} {'predicted':>9} {'meas/pred':>9} {'ratio':>6}"
    )
    lines = [head, "-" * len(head)]
    for x in result["runs"]:
        label = _label(x["config"]) or "default"
        if "error" in x:
            lines.append(f"{label:<22} error: {x['error']}")
            continue
        d = x["decode_tps"]
        lines.append(
            f"{label:<22} {x['load_s']['mean']:>7.2f} {x['ttft_s']['mean'] * 1e3:>8.0f} "
            f"{x['prefill_tps']['mean']:>8.1f} {d['mean']:>7.2f} ± {d['sd']:<4.2f} {x['tokens_per_pass']:>8.2f} "
            f"{x['decode_bytes_per_token'] / 1e6:>9.1f} {100 * x['overlap']:>7.0f}% "
            f"{x['rss_over_baseline_bytes'] / 1e6:>8.0f} {x['predicted_tps']:>9.2f} "
            f"{x['measured_vs_predicted'] or 0:>9.2f} {x.get('ratio_vs_first', 1.0):>6.2f}"
        )
    if result.get("device") not in (None, "host"):
        lines.append(
            f"predicted: {result['device']}'s flash and CPU; the emulation throttles the flash only, so "
            f"where compute bounds the prediction (little or nothing streamed) this host runs faster"
        )
    return "\n".join(lines)


def format_layers(run: dict) -> str:
    """Per-layer milliseconds per decoded token for one configuration."""
    lines = [f"{'unit':<9} {'streamed':>8} {'read ms':>8} {'decomp ms':>9} {'compute ms':>10} {'wait ms':>8}"]
    n = max((u["unit"] for u in run["per_layer"]), default=0)
    for u in run["per_layer"]:
        name = "head" if u["unit"] == n else f"layer {u['unit']}"
        lines.append(
            f"{name:<9} {'yes' if u['streamed'] else 'no':>8} {u['read_s'] * 1e3:>8.2f} "
            f"{u['decompress_s'] * 1e3:>9.2f} {u['compute_s'] * 1e3:>10.2f} {u['wait_s'] * 1e3:>8.2f}"
        )
    lines.append(
        f"{'per token':<9} {'':>8} {run['read_s'] * 1e3:>8.1f} {run['decompress_s'] * 1e3:>9.1f} "
        f"{run['compute_s'] * 1e3:>10.1f} {run['wait_s'] * 1e3:>8.1f}"
    )
    return "\n".join(lines)
