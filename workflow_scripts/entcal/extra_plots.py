"""Figures beyond the paper's: MAUVE against entropy, the calibrated samplers against temperature (the trade-off
of log loss for entropy), and the calibration study's answer."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display (as entcal.plots)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from entcal.plots import MARKERS, _save, _setting_label


def plot_mauve(table: pd.DataFrame, summary: pd.DataFrame, outputs: list[str]) -> None:
    """Figure 5: MAUVE vs bucket mean entropy, a panel per dataset (rows: featurizers)."""
    sizes = summary.drop_duplicates("model").set_index("model")["n_params"]
    datasets = sorted(table["dataset"].unique()) or ["none"]
    feats = list(dict.fromkeys(table["featurizer"])) or ["none"]
    fig, axes = plt.subplots(len(feats), len(datasets), figsize=(5 * len(datasets), 3.8 * len(feats)), squeeze=False)
    for i, fz in enumerate(feats):
        for j, ds in enumerate(datasets):
            ax = axes[i, j]
            t = table[(table["dataset"] == ds) & (table["featurizer"] == fz)]
            order = sorted(t["model"].unique(), key=lambda m: sizes.get(m, 0))
            cmap = plt.get_cmap("viridis", max(len(order), 2))
            for k, m in enumerate(order):
                g = t[t["model"] == m].sort_values("entropy_mean")
                ax.errorbar(
                    g["entropy_mean"],
                    g["mauve_mean"],
                    yerr=g["mauve_sd"],
                    fmt="o-",
                    ms=3,
                    color=cmap(k),
                    label=f"{m} ({sizes.get(m, float('nan')):.3g})",
                )
                ax.axvline(g["human_entropy_mean"].iloc[0], color=cmap(k), ls="--", lw=0.8)
            ax.set(xlabel="excerpt entropy (nats/token)", ylabel="MAUVE", title=f"{ds} ({fz})", ylim=(0, 1.02))
            ax.legend(fontsize=6)
    _save(fig, outputs)


def plot_calibration(table: pd.DataFrame, tradeoff: pd.DataFrame, outputs: list[str]) -> None:
    """Top: on calibration-split human text (teacher-forced), entropy vs log loss as alpha varies, for
    temperature 1/(1+alpha) (solid) and the tilts by the trained head (dashed) and by the one-step
    lookahead (dotted); a tilt beats temperature where its curve lies below at equal entropy.
    Bottom: the same axes for the models' own generations (entropy of generations vs reference log
    loss): temperature settings (line) and every other sampler (markers); the grey diagonal is
    calibration (entropy = log loss)."""
    datasets = sorted(table["dataset"].unique())
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 8.5), squeeze=False)
    fig.subplots_adjust(hspace=0.35)
    styles = {"temperature": "-", "future_entropy": "--", "one_step_lookahead": ":"}
    for j, ds in enumerate(datasets):
        t = table[table["dataset"] == ds]
        models = list(t.sort_values("n_params")["model"].unique())
        cmap = plt.get_cmap("viridis", max(len(models), 2))
        ax = axes[0, j]
        for m in models:
            tr = tradeoff[(tradeoff["dataset"] == ds) & (tradeoff["model"] == m)]
            for meth, g in tr.groupby("method"):
                g = g.sort_values("alpha")
                ax.plot(
                    g["tf_entropy"],
                    g["logloss"],
                    styles.get(meth, "-."),
                    color=cmap(models.index(m)),
                    marker=".",
                    label=f"{m} {meth}",
                )
        ax.set(
            xlabel="entropy on human text (nats/token)",
            ylabel="log loss (nats/token)",
            title=f"{ds}: teacher-forced, alpha sweep",
        )
        ax.legend(fontsize=5)
        ax = axes[1, j]
        for m in models:
            g = t[t["model"] == m]
            c = cmap(models.index(m))
            a = g[g["sampler"] == "ancestral"].sort_values("temperature")
            ax.plot(a["entropy_mean"], a["logloss_mean"], "o-", color=c, ms=3, label=f"{m} temperature")
            for r in g[g["sampler"] != "ancestral"].itertuples():
                ax.scatter(
                    r.entropy_mean,
                    r.logloss_mean,
                    marker=MARKERS.get(r.sampler, "x"),
                    s=40,
                    color=c,
                    label=_setting_label(r),
                )
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set(
            xlabel="entropy of generations (nats/token)",
            ylabel="reference log loss (nats/token)",
            title=f"{ds}: generations",
        )
        ax.legend(fontsize=5)
    _save(fig, outputs)


def plot_calibration_study(
    table: pd.DataFrame, study: pd.DataFrame, outputs: list[str], roots: pd.DataFrame | None = None
) -> None:
    """One panel per model x dataset: every method's settings (entropy of generations vs reference log loss,
    ``calibration.csv``), joined in entropy order, and the steps of its root searches (``calibration_roots.csv``,
    small open markers), the diagonal where EntCE = 0, and each method's calibrated point (``calibration_study.csv``)
    with its bootstrap interval of log loss. With measured points, a second row gives each search's log loss at
    EntCE = 0 minus temperature's, with its paired interval (uncorrected; the primary table has the corrected ones)."""
    pairs = sorted({(r.model, r.dataset) for r in study.itertuples()}) or [("", "")]
    roots = roots if roots is not None and len(roots) else None
    measured = roots is not None and "point" in study.columns and (study["point"] == "measured").any()
    rows = 2 if measured else 1
    fig, axes = plt.subplots(rows, len(pairs), figsize=(5.5 * len(pairs), 4.8 * rows), squeeze=False)
    methods = sorted(set(table["sampler"]) | set(study["method"]))
    cmap = plt.get_cmap("tab10", max(len(methods), 2))
    for j, (m, d) in enumerate(pairs):
        ax = axes[0][j]
        t = table[(table["model"] == m) & (table["dataset"] == d)]
        for k, meth in enumerate(methods):
            g = t[t["sampler"] == meth].sort_values("entropy_mean")
            if not g.empty:
                ax.plot(
                    g["entropy_mean"],
                    g["logloss_mean"],
                    "-" if len(g) > 1 else "",
                    color=cmap(k),
                    marker=MARKERS.get(meth, "o"),
                    ms=4,
                    label=meth,
                )
            if roots is not None:
                r_ = roots[(roots["model"] == m) & (roots["dataset"] == d) & (roots["method"] == meth)]
                ax.plot(r_["entropy"], r_["logloss"], ls="none", color=cmap(k), marker="o", mfc="none", ms=4, alpha=0.6)
            s = study[(study["model"] == m) & (study["dataset"] == d) & (study["method"] == meth) & study["crosses"]]
            for r in s.itertuples():
                ok = np.isfinite(r.logloss_ci_low)
                yerr = [[r.logloss_at_calibration - r.logloss_ci_low], [r.logloss_ci_high - r.logloss_at_calibration]]
                ax.errorbar(
                    r.entropy_at_calibration,
                    r.logloss_at_calibration,
                    yerr=yerr if ok else None,
                    color=cmap(k),
                    marker="*",
                    ms=10,
                    capsize=3,
                )
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, label="EntCE = 0")
        ax.set(
            xlabel="entropy of generations (nats/token)",
            ylabel="reference log loss (nats/token)",
            title=f"{m} / {d}\nstars: calibrated points (95 % CI)"
            + ("; circles: search steps" if roots is not None else ""),
        )
        ax.legend(fontsize=6)
        if measured:
            ax = axes[1][j]
            s = study[(study["model"] == m) & (study["dataset"] == d) & (study["method"] != "ancestral")]
            labels = [
                f"{r.method}\nhead {int(r.head_seed)}" if pd.notna(r.head_seed) else r.method for r in s.itertuples()
            ]
            for i, r in enumerate(s.itertuples()):
                if np.isfinite(r.delta_vs_temperature):
                    yerr = [[r.delta_vs_temperature - r.delta_ci_low], [r.delta_ci_high - r.delta_vs_temperature]]
                    ax.errorbar(i, r.delta_vs_temperature, yerr=yerr, marker="o", color="k", capsize=3)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
            ax.set_xlim(-0.7, max(len(labels), 1) - 0.3)
            ax.set(ylabel="log loss at EntCE = 0 − temperature's (nats)", title="paired 95 % CI over prompts")
    _save(fig, outputs)
