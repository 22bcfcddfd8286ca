"""Figures in the paper's layouts, written as PNG and PDF.

- :func:`plot_per_step` (Figure 3 layout): per-step entropy of generations (solid) and reference
  log loss (dashed), one panel per dataset (rows per family), colour = model size; optional
  exponential smoothing (the paper uses factor 0.2).
- :func:`plot_scaling` (Figure 2 layout): log EntCE vs log model size, one panel per family, one
  colour per dataset, fitted line and exponent in the legend; EntCE <= 0 marked, not fitted.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from entcal.scaling import power_law_curve


def ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential smoothing y_t = alpha * x_t + (1 - alpha) * y_{t-1}; alpha = 1 is no smoothing."""
    x = np.asarray(x, dtype=float)
    y = np.empty_like(x)
    acc = np.nan
    for i, v in enumerate(x):
        acc = v if np.isnan(acc) else (alpha * v + (1 - alpha) * acc if not np.isnan(v) else acc)
        y[i] = acc
    return y


def _not_checkpoint(summary: pd.DataFrame) -> pd.Series:
    if "checkpoint_of" not in summary:
        return pd.Series(True, index=summary.index)
    return summary["checkpoint_of"].isna() | (summary["checkpoint_of"] == "")


def _save(fig, outputs: list[str]) -> None:
    for out in outputs:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_per_step(
    per_step: pd.DataFrame,
    summary: pd.DataFrame,
    outputs: list[str],
    smoothing: float = 1.0,
    temperature: float = 1.0,
    sampler: str = "ancestral",
    smoothing_logloss: float | None = None,
) -> None:
    """Figure 3 layout for base models at one sampler setting; a family with no base model (the demo's
    SmolLM2-Instruct) shows its instruct models instead, marked in the legend. ``smoothing`` smooths the entropy
    curves, ``smoothing_logloss`` (default: the same) the log-loss curves (the authors: 0.2 and 0.1)."""
    smoothing_logloss = smoothing if smoothing_logloss is None else smoothing_logloss
    s = summary[_not_checkpoint(summary)]
    has_base = set(s.loc[~s["instruct"], "family"])
    s = s[~s["instruct"] | ~s["family"].isin(has_base)]
    tag = dict(zip(s["model"], np.where(s["instruct"], " instruct", "")))
    meta = s[["model", "dataset", "family", "n_params"]]
    meta = meta.drop_duplicates()
    ps = per_step[(per_step["sampler"] == sampler) & np.isclose(per_step["temperature"], temperature)]
    ps = ps.merge(meta, on=["model", "dataset"])
    families, datasets = sorted(ps["family"].unique()), sorted(ps["dataset"].unique())
    fig, axes = plt.subplots(
        len(families),
        len(datasets),
        figsize=(4.2 * len(datasets), 3.2 * len(families)),
        squeeze=False,
        layout="constrained",
    )  # titles clear of the axis labels above them
    for i, fam in enumerate(families):
        sizes = sorted(ps.loc[ps["family"] == fam, "n_params"].unique())
        cmap = plt.get_cmap("viridis", max(len(sizes), 2))
        for j, ds in enumerate(datasets):
            ax = axes[i, j]
            sub = ps[(ps["family"] == fam) & (ps["dataset"] == ds)]
            for (model, n), g in sub.groupby(["model", "n_params"]):
                c = cmap(sizes.index(n))
                g = g.sort_values("step")
                ax.plot(
                    g["step"],
                    ema(g["entropy_mean"], smoothing),
                    color=c,
                    lw=1.3,
                    label=f"{model} ({n:.3g}{tag.get(model, '')})",
                )
                ax.plot(g["step"], ema(g["logloss_mean"], smoothing_logloss), color=c, lw=1.3, ls="--")
            ax.set_title(f"{fam} / {ds}", fontsize=9)
            ax.set_xlabel("generation step")
            if j == 0:
                ax.set_ylabel("nats / token")
            ax.legend(fontsize=6, title="solid: entropy, dashed: log loss", title_fontsize=6)
    smooth = (
        f"smoothing={smoothing}"
        if smoothing_logloss == smoothing
        else f"smoothing {smoothing} (entropy), {smoothing_logloss} (log loss)"
    )
    fig.suptitle(f"Per-step entropy vs reference log loss ({sampler}, T={temperature}, {smooth})", fontsize=10)
    _save(fig, outputs)


ESTIMATOR_LABELS = {"mean": "EntCE = mean over steps of per-step means", "pooled": "EntCE pooled over live tokens"}


def plot_scaling(
    summary: pd.DataFrame,
    fits: pd.DataFrame,
    outputs: list[str],
    temperature: float = 1.0,
    sampler: str = "ancestral",
    estimator: str = "mean",
) -> None:
    """Figure 2 layout: log EntCE vs log size per family, one colour per dataset. ``summary`` as
    :func:`entcal.scaling.with_estimator` gives it for ``estimator``, named in the title."""
    sel = summary[
        (summary["sampler"] == sampler)
        & np.isclose(summary["temperature"], temperature)
        & ~summary["instruct"]
        & _not_checkpoint(summary)
    ]
    families, datasets = sorted(sel["family"].unique()), sorted(sel["dataset"].unique())
    colors = {d: plt.get_cmap("tab10")(k) for k, d in enumerate(datasets)}
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 3.6), squeeze=False)
    for i, fam in enumerate(families):
        ax = axes[0, i]
        for ds in datasets:
            g = sel[(sel["family"] == fam) & (sel["dataset"] == ds)].sort_values("n_params")
            pos = g[g["entce"] > 0]
            neg = g[~(g["entce"] > 0)]
            fit = fits[(fits["family"] == fam) & (fits["dataset"] == ds)]
            label = ds
            if len(fit) and np.isfinite(fit["slope"].iloc[0]):
                f = fit.iloc[0]
                xs = np.log(pos["n_params"].astype(float))
                ax.plot(xs, f["slope"] * xs + f["intercept"], color=colors[ds], lw=1)
                label = f"{ds}: slope {f['slope']:.2f}"
            ax.scatter(np.log(pos["n_params"].astype(float)), np.log(pos["entce"]), color=colors[ds], label=label, s=18)
            for r in neg.itertuples():
                ax.axvline(np.log(float(r.n_params)), color=colors[ds], ls=":", lw=0.8)
            if len(neg):
                ax.plot([], [], color=colors[ds], ls=":", label=f"{ds}: EntCE<=0 ({len(neg)}, not fitted)")
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("log parameters")
        ax.set_ylabel("log EntCE (nats)")
        ax.legend(fontsize=6)
    fig.suptitle(f"log EntCE vs log size ({ESTIMATOR_LABELS[estimator]})", fontsize=10)
    _save(fig, outputs)


def plot_theory(mass: pd.DataFrame, curves: pd.DataFrame, table: pd.DataFrame, outputs: list[str]) -> None:
    """Figure 1: singleton mass vs m per alpha (left); rank-frequency per dataset (right)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, (a, g) in enumerate(mass.groupby("alpha")):
        c = plt.get_cmap("tab10")(k)
        ax1.loglog(g["m"], g["singleton_mass_exact"], color=c, label=f"alpha={a:g} exact")
        ax1.errorbar(
            g["m"], g["singleton_mass_mc"], yerr=2 * g["singleton_mass_mc_se"], fmt="o", ms=3, color=c, alpha=0.7
        )
        m0, y0 = g["m"].iloc[0], g["singleton_mass_exact"].iloc[0]
        ax1.loglog(
            g["m"], y0 * (g["m"] / m0) ** (1 / a - 1), ls=":", color=c, lw=1, label=f"slope 1/alpha-1 = {1 / a - 1:.2f}"
        )
    v = int(mass["v"].iloc[0])
    ax1.axvline(v / 3, color="grey", lw=0.8, ls="--")
    ax1.set_xlabel("training samples m")
    ax1.set_ylabel("mass of items seen once")
    ax1.set_title(f"Singleton mass, Zipf over v={v:,} items (dashed: v/3)", fontsize=9)
    ax1.legend(fontsize=6)
    words = curves[curves["unit"] == "word"]
    for k, (d, g) in enumerate(words.groupby("dataset")):
        a = table.loc[table["dataset"] == d, "alpha_ols"].iloc[0]
        ax2.loglog(g["rank"], g["frequency"], color=plt.get_cmap("tab10")(k), label=f"{d}: alpha={a:.2f}")
    ax2.set_xlabel("rank")
    ax2.set_ylabel("frequency")
    ax2.set_title("Rank-frequency of words (top ranks)", fontsize=9)
    ax2.legend(fontsize=7)
    _save(fig, outputs)


EXACT_SHOWN = ["original", "local_temperature", "global_temperature", "one_step_lookahead", "future_entropy"]


def plot_future_entropy_exact(table, steps, noise, mc, outputs: list[str], instance: int = 0) -> None:
    """Four panels: per-step curves, EntCE vs log loss, |EntCE| vs predictor noise, MC label error."""
    fig, ax = plt.subplots(2, 2, figsize=(10, 8))
    st = steps[steps["instance"] == instance]
    for k, m in enumerate(EXACT_SHOWN):
        g = st[st["method"] == m]
        c = plt.get_cmap("tab10")(k)
        ax[0, 0].plot(g["step"], g["entropy"], color=c, label=m)
        ax[0, 0].plot(g["step"], g["logloss"], color=c, ls="--")
    ax[0, 0].set(xlabel="step", ylabel="nats", title="(a) entropy of own generations (solid), log loss (dashed)")
    ax[0, 0].legend(fontsize=6)
    tb = table[(table["instance"] == instance) & np.isfinite(table["logloss"])]
    ax[0, 1].axhline(0, color="grey", lw=0.8)
    for r in tb.itertuples():
        ax[0, 1].scatter(r.logloss, r.entce, s=20)
        ax[0, 1].annotate(r.method, (r.logloss, r.entce), fontsize=6)
    ax[0, 1].set(xlabel="log loss (nats/token)", ylabel="EntCE (nats/token)", title="(b) EntCE vs log loss")
    agg = noise.groupby("delta")["abs_entce"].agg(["mean", "sem"])
    slope = np.polyfit(np.log(agg.index), np.log(agg["mean"]), 1)[0]
    ax[1, 0].errorbar(agg.index, agg["mean"], yerr=2 * agg["sem"], fmt="o-", label=f"slope {slope:.2f}")
    ax[1, 0].set(
        xscale="log",
        yscale="log",
        xlabel="predictor noise delta (nats)",
        ylabel="|EntCE|",
        title="(c) Algorithm 1 with a noisy predictor",
    )
    ax[1, 0].legend(fontsize=7)
    for k, (name, g) in enumerate(mc.groupby("estimator")):
        ax[1, 1].loglog(g["m"], g["rmse"], "o-", color=plt.get_cmap("tab10")(k), label=name)
    g = mc[mc["estimator"] == "surprisal"]
    ax[1, 1].loglog(g["m"], g["rmse"].iloc[0] / np.sqrt(g["m"] / g["m"].iloc[0]), ":", color="grey", label="1/sqrt(m)")
    ax[1, 1].set(xlabel="rollouts m", ylabel="RMSE of the label", title="(d) Monte Carlo future-entropy labels")
    ax[1, 1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, outputs)


MARKERS = {
    "top_p": "^",
    "top_k": "v",
    "min_p": "s",
    "typical": "D",
    "eta": "P",
    "future_entropy": "X",
    "one_step_lookahead": "h",
    "mirostat": "d",
}


def _setting_label(r) -> str:
    param = getattr(r, "sampler_param", None)
    return f"{r.model} {r.sampler}" + (f" {param:g}" if param is not None and param == param else "")


def plot_tradeoff(summary: pd.DataFrame, outputs: list[str], estimator: str = "mean") -> None:
    """Figure 4 layout: EntCE vs log loss as temperature falls (lines, base models), the instruct
    model (stars) and truncation samplers (markers; smoothed log loss), one panel per dataset; ``summary`` as
    :func:`entcal.scaling.with_estimator` gives it for ``estimator``, named in the title."""
    s = summary[_not_checkpoint(summary)]
    datasets = sorted(s["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for j, ds in enumerate(datasets):
        ax = axes[0, j]
        d = s[s["dataset"] == ds]
        sizes = sorted(d["n_params"].unique())
        cmap = plt.get_cmap("viridis", max(len(sizes), 2))
        for model, g in d[(d["sampler"] == "ancestral") & ~d["instruct"]].groupby("model"):
            g = g.sort_values("temperature")
            c = cmap(sizes.index(g["n_params"].iloc[0]))
            ax.plot(
                g["logloss_mean"],
                g["entce"],
                "o-",
                color=c,
                ms=3,
                label=f"{model} T={g['temperature'].min():g}..{g['temperature'].max():g}",
            )
        for r in d[d["instruct"]].itertuples():
            ax.scatter(
                r.logloss_mean,
                r.entce,
                marker="*",
                s=80,
                color=cmap(sizes.index(r.n_params)),
                label=f"{r.model} (instruct)",
            )
        for r in d[d["sampler"] != "ancestral"].itertuples():
            ax.scatter(
                r.logloss_mean,
                r.entce,
                marker=MARKERS.get(r.sampler, "x"),
                s=30,
                color=cmap(sizes.index(r.n_params)),
                label=_setting_label(r),
            )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="log loss on human text (nats/token)", ylabel="EntCE (nats/token)", title=ds)
        ax.legend(fontsize=5)
    fig.suptitle(f"EntCE vs log loss ({ESTIMATOR_LABELS[estimator]})", fontsize=10)
    _save(fig, outputs)


def plot_context(per_step: pd.DataFrame, fits: pd.DataFrame, outputs: list[str], reference_start: int = 1) -> None:
    """Reference log loss vs context position with the fitted L_inf + A l^-beta, per dataset; the position counts
    the prompt as fed (``context_fits.csv``'s mean_prompt_len) and the reference tokens before, as the fits do."""

    ps = per_step[(per_step["sampler"] == "ancestral") & np.isclose(per_step["temperature"], 1.0)]
    datasets = sorted(ps["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for j, ds in enumerate(datasets):
        ax = axes[0, j]
        for k, (model, g) in enumerate(ps[ps["dataset"] == ds].groupby("model")):
            c = plt.get_cmap("tab10")(k % 10)
            f = fits[(fits["model"] == model) & (fits["dataset"] == ds)]
            if not len(f):
                continue
            l = f["mean_prompt_len"].iloc[0] + g["step"].to_numpy(float) + reference_start - 2
            ax.plot(l, ema(g["logloss_mean"], 0.2), color=c, lw=0.8, alpha=0.7)
            if f["converged"].iloc[0]:
                f = f.iloc[0]
                ax.plot(
                    l,
                    power_law_curve(l, f["L_inf"], f["A"], f["beta"]),
                    color=c,
                    lw=1.5,
                    label=f"{model}: L_inf={f['L_inf']:.2f}, beta={f['beta']:.2f}",
                )
        ax.set(xscale="log", xlabel="context position l (tokens)", ylabel="reference log loss (nats)", title=ds)
        ax.legend(fontsize=6)
    _save(fig, outputs)


def plot_data_scaling(summary: pd.DataFrame, fits: pd.DataFrame, outputs: list[str], estimator: str = "mean") -> None:
    """log EntCE vs log training tokens for trained models evaluated at their checkpoints (``summary`` as
    :func:`entcal.scaling.with_estimator` gives it for ``estimator``, named in the title)."""
    sel = summary[
        (summary["sampler"] == "ancestral") & np.isclose(summary["temperature"], 1.0) & summary["train_tokens"].notna()
    ].copy()
    sel["base"] = sel["checkpoint_of"].fillna("").where(sel["checkpoint_of"].fillna("") != "", sel["model"])
    datasets = sorted(sel["dataset"].unique())
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(5 * max(1, len(datasets)), 3.8), squeeze=False)
    for j, ds in enumerate(datasets):
        ax = axes[0, j]
        for k, r in enumerate(fits[fits["dataset"] == ds].itertuples()):
            g = sel[(sel["dataset"] == ds) & (sel["base"] == r.model)].sort_values("train_tokens")
            c = plt.get_cmap("tab10")(k % 10)
            ax.plot(g["train_tokens"], g["entce"], "o-", color=c, label=f"{r.model}: slope {r.slope:.2f}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="training tokens", ylabel="EntCE (nats/token)", title=ds)
        ax.legend(fontsize=7)
    fig.suptitle(f"EntCE vs training tokens ({ESTIMATOR_LABELS[estimator]})", fontsize=10)
    _save(fig, outputs)
