"""Plots for `edgellm bench --plot FILE` (matplotlib, an optional extra: pip install edgellm[plot]).

Left: a timeline of a few decoded tokens, one lane each for flash reads, decompression, compute and the model
waiting on a layer, coloured by layer (colour bar). Right (with a budget sweep): decode tok/s against the RAM
budget, measured, predicted and the flash bound. PNG or SVG by the file's suffix.
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
    fig = figure(result, plt)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure(result: dict, plt=None):
    """The matplotlib Figure: timeline of the first run, and the budget curve when budgets were swept."""
    plt = plt or _matplotlib()
    runs = [r for r in result["runs"] if "error" not in r]
    if not runs:
        raise EdgeLLMError("no configuration ran; nothing to plot")
    curve = "budget" in result.get("sweep", {}) and len(runs) > 1
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(15 if curve else 10, 4.5), squeeze=False)
    _timeline(axes[0][0], runs[0], plt)
    if curve:
        _budget_curve(axes[0][1], runs)
    fig.suptitle(f"{Path(result['model']).name} on {result['device']}")
    fig.tight_layout()
    return fig


def _timeline(ax, run: dict, plt) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm
    from matplotlib.lines import Line2D

    events = run.get("trace") or []
    units = max((e[1] for e in events), default=0) + 1
    cmap = plt.get_cmap("viridis", max(units, 2))
    for lane_i, lane in enumerate(LANES):
        for name, unit, t0, t1 in events:
            if name == lane:
                ax.broken_barh([(t0 * 1e3, max((t1 - t0) * 1e3, 0.05))], (lane_i - 0.4, 0.8), color=cmap(unit))
    for t in run.get("token_times", []):
        ax.axvline(t * 1e3, color="grey", lw=0.6, ls="--")
    ax.set_yticks(range(len(LANES)), LANES)
    ax.set_ylim(len(LANES) - 0.5, -0.5)  # every lane shown, top down, even an empty one
    ax.set_xlabel("ms since the first generated token")
    label = " ".join(f"{k}={v}" for k, v in run["config"].items()) or "default"
    ax.set_title(f"timeline, {label}")
    # the colour of each layer (the last unit is the head) and what the dashed lines mark
    norm = BoundaryNorm([u - 0.5 for u in range(max(units, 2) + 1)], cmap.N)
    bar = ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01, fraction=0.04)
    ticks = sorted({0, units // 2, units - 1})
    bar.set_ticks(ticks, labels=["head" if u == units - 1 and units > 1 else f"layer {u}" for u in ticks])
    ax.legend(
        handles=[Line2D([], [], color="grey", lw=0.8, ls="--", label="a token is done")],
        loc="upper right",
        bbox_to_anchor=(1.0, -0.07),
        fontsize="small",
        frameon=False,
    )


def _budget_curve(ax, runs: list[dict]) -> None:
    """Measured and predicted decode tok/s against the budget, on a log axis when they span more than 10x so
    that neither flattens the other; the flash bound (finite only when something streams) as a wide grey line."""
    xs = [r["budget_bytes"] / 1e6 for r in runs]
    ys = [r["decode_tps"]["mean"] for r in runs]
    sd = [r["decode_tps"]["sd"] for r in runs]
    pred = [r["predicted_tps"] for r in runs]
    flash = [
        (x, r["flash_bound_tps"]) for x, r in zip(xs, runs) if r.get("flash_bound_tps") not in (None, float("inf"))
    ]
    if flash:  # under the predicted line where the flash bounds it
        ax.plot(*zip(*flash), ls="-", lw=4, color="lightgrey", label="flash bound")
    ax.errorbar(xs, ys, yerr=sd, marker="o", capsize=3, label="measured")
    for x, y in zip(xs, ys):
        ax.annotate(
            f"{y:,.0f}" if y >= 100 else f"{y:.3g}",
            (x, y),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=8,
        )
    ax.plot(xs, pred, marker="x", ls="--", label="predicted (slower of flash and CPU)")
    values = [v for v in ys + pred + [f for _, f in flash] if v and v > 0]
    if values and max(values) > 10 * min(values):
        ax.set_yscale("log")
    ax.set_xlabel("RAM budget (MB)")
    ax.set_ylabel("decode tok/s" + (" (log)" if ax.get_yscale() == "log" else ""))
    ax.set_title("budget -> decode speed")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
