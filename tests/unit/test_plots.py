"""The figures draw what their tables hold: panels, lines, points and labels read back from the
matplotlib objects (not file sizes)."""

import numpy as np
import pandas as pd
import pytest

from entcal import plots


@pytest.fixture
def figures(monkeypatch):
    caught = []
    monkeypatch.setattr(plots, "_save", lambda fig, outputs: caught.append(fig))
    yield caught
    import matplotlib.pyplot as plt

    plt.close("all")


def _summary():
    rows = []
    for fam, models in {"fa": [("a1", 1e6), ("a2", 4e6)], "fb": [("b1", 2e6), ("b2", 8e6)]}.items():
        for m, n in models:
            for ds in ("code", "prose"):
                for t in (0.8, 1.0):
                    entce = 0.5 * (n / 1e6) ** -0.3 * t if m != "b2" else -0.1
                    rows.append(
                        {
                            "model": m,
                            "family": fam,
                            "n_params": n,
                            "dataset": ds,
                            "instruct": False,
                            "sampler": "ancestral",
                            "temperature": t,
                            "entce": entce,
                            "logloss_mean": 3 - t,
                        }
                    )
    rows.append(
        {
            "model": "a1_chat",
            "family": "fa",
            "n_params": 1e6,
            "dataset": "prose",
            "instruct": True,
            "sampler": "ancestral",
            "temperature": 1.0,
            "entce": -0.4,
            "logloss_mean": 3.5,
        }
    )
    return pd.DataFrame(rows)


def test_per_step_figure_draws_entropy_and_log_loss_of_every_model(figures):
    summary = _summary()
    steps = np.arange(5)
    per_step = pd.concat(
        [
            pd.DataFrame(
                {
                    "model": m,
                    "dataset": ds,
                    "sampler": "ancestral",
                    "temperature": 1.0,
                    "step": steps,
                    "entropy_mean": 2 + 0.1 * steps + k,
                    "logloss_mean": 2.5 - 0 * steps + k,
                }
            )
            for k, m in enumerate(["a1", "a2", "b1", "b2"])
            for ds in ("code", "prose")
        ]
    )
    plots.plot_per_step(per_step, summary, ["unused.png"], smoothing=1.0)
    (fig,) = figures
    axes = np.array(fig.axes).reshape(2, 2)  # families x datasets
    assert [ax.get_title() for ax in axes.ravel()] == ["fa / code", "fa / prose", "fb / code", "fb / prose"]
    for ax in axes.ravel():
        lines = ax.get_lines()
        assert len(lines) == 4  # two models, entropy (solid) and log loss (dashed) each
        assert [ln.get_linestyle() for ln in lines] == ["-", "--", "-", "--"]
        assert ax.get_xlabel() == "generation step"
    a1 = axes[0, 0].get_lines()[0]
    np.testing.assert_allclose(a1.get_xdata(), steps)
    np.testing.assert_allclose(a1.get_ydata(), 2 + 0.1 * steps)  # smoothing 1: the means themselves
    assert axes[0, 0].get_ylabel() == "nats / token" and axes[0, 1].get_ylabel() == ""


def test_scaling_figure_plots_log_entce_the_fit_and_marks_unfittable_models(figures):
    summary = _summary()
    fits = pd.DataFrame(
        [
            {"family": "fa", "dataset": "code", "slope": -0.3, "intercept": np.log(0.5) + 0.3 * np.log(1e6)},
            {"family": "fa", "dataset": "prose", "slope": np.nan, "intercept": np.nan},
        ]
    )
    plots.plot_scaling(summary, fits, ["unused.png"])
    (fig,) = figures
    fa, fb = fig.axes
    assert (fa.get_title(), fb.get_title()) == ("fa", "fb")
    assert fa.get_xlabel() == "log parameters" and fa.get_ylabel() == "log EntCE (nats)"
    pts = {c.get_label(): c.get_offsets() for c in fa.collections}
    code = pts["code: slope -0.30"]
    np.testing.assert_allclose(code[:, 0], np.log([1e6, 4e6]))
    np.testing.assert_allclose(code[:, 1], np.log(0.5 * np.array([1.0, 4.0]) ** -0.3))
    (fit_line,) = [ln for ln in fa.get_lines() if ln.get_linestyle() == "-"]
    np.testing.assert_allclose(fit_line.get_ydata(), code[:, 1], rtol=1e-9)  # the fit passes through these points
    assert "prose" in pts  # no finite fit: points, no slope in the label
    # b2's EntCE is negative on both datasets: a dotted vertical line each, not a point
    vlines = [ln for ln in fb.get_lines() if ln.get_linestyle() == ":" and len(ln.get_xdata()) == 2]
    assert len(vlines) == 2 and all(np.allclose(ln.get_xdata(), np.log(8e6)) for ln in vlines)
    assert all(len(c.get_offsets()) == 1 for c in fb.collections)  # b1 only


def test_tradeoff_figure_draws_a_temperature_curve_per_base_model_and_stars_instruct_models(figures):
    plots.plot_tradeoff(_summary(), ["unused.png"])
    (fig,) = figures
    code, prose = fig.axes
    assert (code.get_title(), prose.get_title()) == ("code", "prose")
    curves = [ln for ln in prose.get_lines() if ln.get_marker() == "o"]
    assert len(curves) == 4 and all(len(ln.get_xdata()) == 2 for ln in curves)  # 4 models x 2 temperatures
    a1 = next(ln for ln in curves if ln.get_label().startswith("a1 "))
    np.testing.assert_allclose(a1.get_xdata(), [3 - 0.8, 3 - 1.0])  # log loss, sorted by temperature
    stars = [c for c in prose.collections if c.get_label() == "a1_chat (instruct)"]
    assert len(stars) == 1 and np.allclose(stars[0].get_offsets(), [[3.5, -0.4]])
    assert not [c for c in code.collections if "instruct" in c.get_label()]
