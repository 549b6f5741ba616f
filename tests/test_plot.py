"""edgellm bench --plot: a readable budget curve and a timeline that says what its colours mean."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from edgellm.bench.plot import figure, plot


def _run(budget_mb: float, measured: float, predicted: float, flash: float) -> dict:
    trace = [[lane, u, 0.001 * u, 0.001 * u + 0.0008] for u in range(4) for lane in ("read", "compute")]
    return {
        "config": {"budget": f"{budget_mb}MB"},
        "budget_bytes": int(budget_mb * 1e6),
        "decode_tps": {"mean": measured, "sd": measured * 0.05},
        "predicted_tps": predicted,
        "flash_bound_tps": flash,
        "trace": trace,
        "token_times": [0.0, 0.004],
    }


def _result(runs) -> dict:
    return {
        "model": "m.ellm",
        "device": "rpi5-nvme",
        "sweep": {"budget": [r["config"]["budget"] for r in runs]},
        "runs": runs,
    }


def test_curve_goes_log_when_values_span_decades(tmp_path):
    import matplotlib.pyplot as plt

    wide = _result([_run(3, 40, 120, 130), _run(4, 60, 200, 210), _run(6, 1000, 2500, float("inf"))])
    fig = figure(wide)
    timeline, curve, colourbar = fig.axes  # subplots first, then the colour bar
    assert curve.get_yscale() == "log"
    lo, hi = curve.get_ylim()
    assert lo <= 40 * 0.95 and hi >= 2500  # every measured and predicted point is shown
    labels = [t.get_text() for t in curve.get_legend().get_texts()]
    assert any("measured" in t for t in labels) and any("predicted" in t for t in labels)
    assert timeline.get_legend() is not None  # the dashed token lines are explained
    assert "head" in [t.get_text() for t in colourbar.get_yticklabels()]  # and the colours
    plt.close(fig)
    narrow = figure(_result([_run(3, 40, 50, 55), _run(4, 60, 70, 75)]))
    assert narrow.axes[1].get_yscale() == "linear"
    plt.close(narrow)
    assert plot(wide, tmp_path / "p.png").stat().st_size > 0
