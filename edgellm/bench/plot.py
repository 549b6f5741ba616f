"""Plots for `edgellm bench --plot FILE` (matplotlib, an optional extra: pip install edgellm[plot]).

Left: a timeline of a few decoded tokens, one lane each for flash reads, decompression, compute and the model
waiting on a layer, coloured by layer. Right (with a budget sweep): decode tok/s against the RAM budget,
measured and predicted. PNG or SVG by the file's suffix.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import EdgeLLMError

LANES = ("read", "decompress", "compute", "wait")


def _matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeLLMError("plots need matplotlib: pip install 'edgellm[plot]'") from None
    return plt


def plot(result: dict, path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise EdgeLLMError(f"{path}: the plot file must end in .png or .svg")
    plt = _matplotlib()
    runs = [r for r in result["runs"] if "error" not in r]
    if not runs:
        raise EdgeLLMError("no configuration ran; nothing to plot")
    curve = "budget" in result.get("sweep", {}) and len(runs) > 1
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(15 if curve else 10, 4.5), squeeze=False)
    _timeline(axes[0][0], runs[0], plt)
    if curve:
        _budget_curve(axes[0][1], runs)
    title = f"{Path(result['model']).name} on {result['device']}"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _timeline(ax, run: dict, plt) -> None:
    events = run.get("trace") or []
    units = max((e[1] for e in events), default=0) + 1
    cmap = plt.get_cmap("viridis", max(units, 2))
    for lane_i, lane in enumerate(LANES):
        for name, unit, t0, t1 in events:
            if name == lane:
                ax.broken_barh([(t0 * 1e3, max((t1 - t0) * 1e3, 0.05))], (lane_i - 0.4, 0.8),
                               color=cmap(unit))
    for t in run.get("token_times", []):
        ax.axvline(t * 1e3, color="grey", lw=0.6, ls="--")
    ax.set_yticks(range(len(LANES)), LANES)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the first generated token (dashed: tokens)")
    label = " ".join(f"{k}={v}" for k, v in run["config"].items()) or "default"
    ax.set_title(f"timeline, {label} (colour = layer)")


def _budget_curve(ax, runs: list[dict]) -> None:
    xs = [r["budget_bytes"] / 1e6 for r in runs]
    ys = [r["decode_tps"]["mean"] for r in runs]
    sd = [r["decode_tps"]["sd"] for r in runs]
    ax.errorbar(xs, ys, yerr=sd, marker="o", label="measured")
    ax.plot(xs, [r["predicted_tps"] for r in runs], marker="x", ls="--", label="predicted")
    ax.set_xlabel("RAM budget (MB)")
    ax.set_ylabel("decode tok/s")
    ax.set_title("budget -> decode speed")
    ax.grid(alpha=0.3)
    ax.legend()
