"""Per-step curves of a set of generation and score files: entropy of generations and log loss of references at
each step, with standard errors, the smoothed curves, and the bootstrap of EntCE over prompts; the token arrays
checked against their lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from entcal.files import IntermediateFileError, redo_hint


def check_token_arrays(df: pd.DataFrame, path: str | Path, columns: list[str]) -> None:
    """Every per-token array of ``df`` (one row per prompt) is finite and holds ``n_tokens`` values.

    Where a generation ended is known from ``n_tokens`` (and ``stopped_at_eos``), never from a NaN: a NaN or
    infinite entropy or log loss is a damaged or miscomputed file, and aggregating it would move EntCE
    silently (the one exception: with ``truncation_epsilon: 0`` the log loss of each of a row's ``n_outside``
    tokens outside a truncation's support is +inf, as stated). Raises :class:`IntermediateFileError` naming
    the file, the row (``example_id``) and the column.
    """
    for col in columns:
        for row, (eid, n, arr) in enumerate(zip(df["example_id"], df["n_tokens"], df[col])):
            a = np.asarray(arr, dtype=np.float64)
            if len(a) != int(n):
                raise IntermediateFileError(
                    f"{path}: row {row} (example_id {eid}): {col} holds {len(a)} values but "
                    f"n_tokens is {n}. {redo_hint(path)}"
                )
            bad = np.flatnonzero(~np.isfinite(a))
            if (
                col == "logloss"
                and "n_outside" in df
                and np.all(a[bad] == np.inf)
                and bad.size <= df["n_outside"].iloc[row]
            ):
                continue  # truncation_epsilon 0: a reference token outside the support has infinite log loss
            if bad.size:
                raise IntermediateFileError(
                    f"{path}: row {row} (example_id {eid}): {col} is {a[bad[0]]} at token "
                    f"{bad[0]} ({bad.size} non-finite values in the row); a finished job "
                    f"writes finite values only. {redo_hint(path)}"
                )


def ragged_matrix(seqs, width: int) -> np.ndarray:
    """(N, width) float64 array from variable-length sequences, NaN where a sequence has ended."""
    m = np.full((len(seqs), width), np.nan)
    for i, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.float64)[:width]
        m[i, : len(s)] = s
    return m


def _mean_se(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.sum(~np.isnan(m), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(m, axis=0) if m.size else np.array([])
        sd = np.nanstd(m, axis=0, ddof=1) if m.shape[0] > 1 else np.full(m.shape[1], np.nan)
        se = sd / np.sqrt(n)
    return mean, se, n


def boot_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) prompt counts, each row a resample of the n prompts with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def replicate_points(
    H: np.ndarray, L: np.ndarray, W: np.ndarray, estimator: str, steps: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(entropy, log loss) of every replicate, computed exactly from its per-step sums: ``H``, ``L`` prompt x step
    matrices (NaN after a sequence ended), ``W`` replicates x prompts counts (a row of ones: the estimate itself).
    ``mean``: the mean over steps of per-step means (over the steps where the replicate has both); ``pooled``: every
    live token of ``steps`` weighs the same (default: the steps where the estimate has both). Exactly
    :func:`curves`' estimators for a row of ones."""
    sums, counts = [], []
    for M in (H, L):
        live = ~np.isnan(M)
        sums.append(W @ np.where(live, M, 0.0))
        counts.append(W @ live.astype(np.float64))
    (sh, sl), (ch, cl) = sums, counts
    with np.errstate(invalid="ignore", divide="ignore"):
        if estimator == "mean":
            both = (ch > 0) & (cl > 0)
            return np.nanmean(np.where(both, sh / ch, np.nan), 1), np.nanmean(np.where(both, sl / cl, np.nan), 1)
        if estimator == "pooled":
            steps = (~np.isnan(H)).any(0) & (~np.isnan(L)).any(0) if steps is None else steps
            return sh[:, steps].sum(1) / ch[:, steps].sum(1), sl[:, steps].sum(1) / cl[:, steps].sum(1)
    raise ValueError(f"analysis.estimator: unknown estimator {estimator!r} (mean or pooled)")


def bootstrap_entce(H: np.ndarray, L: np.ndarray, live: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """EntCE of ``n_boot`` resamples of the prompts (rows of the prompt x step matrices ``H``, ``L``; NaN after a
    sequence ends), under both estimators (:func:`replicate_points`; ``pooled`` over the steps ``live``)."""
    W = boot_weights(H.shape[0], n_boot, seed)
    out = {}
    for est in ("mean", "pooled"):
        h, ll = replicate_points(H, L, W, est, live if est == "pooled" else None)
        out[est] = h - ll
    return out


def curves(
    gen: pd.DataFrame, ref: pd.DataFrame, max_len: int, reference_start: int = 1, n_boot: int = 0, seed: int = 0
) -> tuple[pd.DataFrame, dict, pd.DataFrame, dict]:
    """Per-step curves, summary numbers, per-prompt means and bootstrap replicates ({estimator: array},
    empty without ``n_boot``) of one generation file and its scores.

    ``gen``: rows of a generations Parquet; ``ref``: rows of a scores Parquet at the same temperature
    (paired by example_id). ``reference_start``: the reference token of step 1 (1, or the authors' 2).
    """
    gen = gen.sort_values("example_id", ignore_index=True)
    ref = ref.sort_values("example_id", ignore_index=True)
    skip = int(reference_start) - 1
    ref_ll = [np.asarray(x)[skip:] for x in ref["logloss"]]
    ref_tf = [np.asarray(x)[skip:] for x in ref["tf_entropy"]]
    width = int(min(max_len, max(gen["n_tokens"].max(), max(len(x) for x in ref_ll))))
    H = ragged_matrix(gen["entropy"], width)
    L = ragged_matrix(ref_ll, width)
    F = ragged_matrix(ref_tf, width)
    h, h_se, h_n = _mean_se(H)
    l, l_se, l_n = _mean_se(L)
    f, f_se, _ = _mean_se(F)
    steps = pd.DataFrame(
        {
            "step": np.arange(1, width + 1),
            "entropy_mean": h,
            "entropy_se": h_se,
            "entropy_n": h_n,
            "logloss_mean": l,
            "logloss_se": l_se,
            "logloss_n": l_n,
            "tf_entropy_mean": f,
            "tf_entropy_se": f_se,
        }
    )
    both = steps[(steps["entropy_n"] > 0) & (steps["logloss_n"] > 0)]
    ent, ll, tf = both["entropy_mean"].mean(), both["logloss_mean"].mean(), both["tf_entropy_mean"].mean()
    live = both["step"].to_numpy() - 1  # pooled over the same steps: every live token weighs the same
    ent_pooled, ll_pooled, tf_pooled = np.nanmean(H[:, live]), np.nanmean(L[:, live]), np.nanmean(F[:, live])
    # paired per-prompt differences (same example_id) give the standard error of EntCE
    g = pd.Series(np.nanmean(H, axis=1), index=gen["example_id"].to_numpy())
    r = pd.Series(np.nanmean(L, axis=1), index=ref["example_id"].to_numpy())
    d = (g - r).dropna()
    per_prompt = pd.DataFrame(
        {
            "example_id": gen["example_id"].to_numpy(),
            "entropy_mean": np.nanmean(H, axis=1),
        }
    ).merge(
        pd.DataFrame(
            {
                "example_id": ref["example_id"].to_numpy(),
                "logloss_mean": np.nanmean(L, axis=1),
                "tf_entropy_mean": np.nanmean(F, axis=1),
            }
        ),
        on="example_id",
    )
    summary = {
        "n_prompts": int(len(gen)),
        "max_len": int(len(both)),
        "entropy_mean": ent,
        "logloss_mean": ll,
        "tf_entropy_mean": tf,
        "entce": ent - ll,
        "entce_se": np.nan,  # the bootstrap's, below
        "entce_se_per_prompt": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else np.nan,
        "entropy_pooled": float(ent_pooled),
        "logloss_pooled": float(ll_pooled),
        "entce_pooled": float(ent_pooled - ll_pooled),
        "entce_pooled_se": np.nan,
        "gen_minus_tf": ent - tf,
        "tf_minus_logloss": tf - ll,
        "tf_entropy_pooled": float(tf_pooled),
        "gen_minus_tf_pooled": float(ent_pooled - tf_pooled),
        "tf_minus_logloss_pooled": float(tf_pooled - ll_pooled),
        "outside_support_frac": float(ref["n_outside"].sum() / ref["n_tokens"].sum()),
        "mean_gen_tokens": float(gen["n_tokens"].mean()),
        "eos_fraction": float(gen["stopped_at_eos"].mean()),
        "reference_start": int(reference_start),
    }
    boot = bootstrap_entce(H, L, live, n_boot, seed) if n_boot else {}
    if n_boot > 1:  # the standard error of each estimator itself: prompts resampled, the estimator recomputed
        summary["entce_se"] = float(np.nanstd(boot["mean"], ddof=1))
        summary["entce_pooled_se"] = float(np.nanstd(boot["pooled"], ddof=1))
    return steps, summary, per_prompt, boot
