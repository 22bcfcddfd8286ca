"""Per-step curves, EntCE and its two parts, and the summary table.

Definitions (nats/token; step t = 1 is the first generated / first reference token):

- H_t: mean over prompts of the entropy of the sampled distribution at generation step t
  (prompts whose generation already ended at eos do not count at later steps);
- L_t: mean over prompts of the reference log loss at reference token t (at the same temperature);
- F_t: mean teacher-forced entropy at reference token t (the model's entropy on human text);
- over the first T = ``max_len`` steps: entropy_mean = mean_t H_t, logloss_mean = mean_t L_t,
  tf_entropy_mean = mean_t F_t, and
  EntCE = entropy_mean - logloss_mean = (entropy_mean - tf_entropy_mean) + (tf_entropy_mean - logloss_mean).
  The first part (``gen_minus_tf``) is what accumulates while the model feeds on its own output;
  the second (``tf_minus_logloss``) is plain over- (negative) or under-confidence (positive) on human text.
- the pooled estimator of the authors' notebook: ``entropy_pooled`` = sum of every live generation
  step's entropy over the first T steps / their number (steps after a generation ended count for
  nothing, so long generations weigh more), likewise ``logloss_pooled``, and
  ``entce_pooled`` = entropy_pooled - logloss_pooled. It equals ``entce`` when no generation ends early.

- ``reference_start`` (``analysis.reference_start``): the reference token whose log loss is step 1's; 1 (our
  measurement) pairs generation step t with reference token t, 2 (the authors' compute_ents.py) with token t + 1.

``per_prompt.parquet`` keeps, per prompt, the mean over its first ``max_len`` steps of its own
generation entropy, reference log loss and teacher-forced entropy. The bootstrap resamples prompts (the
sampling unit) and recomputes both estimators exactly from the per-step sums of each replicate
(:func:`bootstrap_entce`); ``entce_bootstrap.parquet`` keeps the replicates, which the scaling fits read.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from entcal.files import IntermediateFileError, read_parquet, read_sidecar, redo_hint, replace_atomically
from entcal.scaling import HEADLINE

log = logging.getLogger(__name__)

PER_STEP_KEYS = ["model", "dataset", "sampler", "temperature"]
PER_STEP_CONTRACT = PER_STEP_KEYS + [
    "step",
    "entropy_mean",
    "entropy_se",
    "logloss_mean",
    "logloss_se",
    "tf_entropy_mean",
]


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


def bootstrap_entce(H: np.ndarray, L: np.ndarray, live: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """EntCE of ``n_boot`` resamples of the prompts (rows of the prompt x step matrices ``H``, ``L``; NaN after a
    sequence ends), under both estimators, computed exactly from each replicate's per-step sums: ``mean`` (the
    mean over steps of per-step means, over the steps where the replicate has both) and ``pooled`` (every
    live token of the steps ``live`` weighs the same)."""
    n = H.shape[0]
    rng = np.random.default_rng(seed)
    W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # prompt counts per replicate
    sums, counts = [], []
    for M in (H, L):
        live_m = ~np.isnan(M)
        sums.append(W @ np.where(live_m, M, 0.0))
        counts.append(W @ live_m.astype(np.float64))
    (sh, sl), (ch, cl) = sums, counts
    with np.errstate(invalid="ignore", divide="ignore"):
        both = (ch > 0) & (cl > 0)
        mean = np.nanmean(np.where(both, sh / ch, np.nan), axis=1) - np.nanmean(np.where(both, sl / cl, np.nan), axis=1)
        pooled = sh[:, live].sum(1) / ch[:, live].sum(1) - sl[:, live].sum(1) / cl[:, live].sum(1)
    return {"mean": mean, "pooled": pooled}


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


def headline_columns(row: dict, estimator: str) -> dict:
    """The headline of a summary row under ``estimator`` (``analysis.estimator``): ``entce_headline``, its
    ``entce_headline_se`` and split ``gen_minus_tf_headline`` + ``tf_minus_logloss_headline`` (which add up to it),
    from the ``mean`` columns or their pooled twins (:data:`HEADLINE`)."""
    pick = (lambda c: row[c]) if estimator == "mean" else (lambda c: row[HEADLINE[c]])
    return {
        "estimator": estimator,
        "entce_headline": pick("entce"),
        "entce_headline_se": pick("entce_se"),
        "gen_minus_tf_headline": pick("gen_minus_tf"),
        "tf_minus_logloss_headline": pick("tf_minus_logloss"),
    }


MISSING_COLUMNS = ["model", "dataset", "setting", "sampler", "temperature", "failed_rule", "missing_file", "log"]


def split_finished(jobs: list[dict], logs: dict[str, str]) -> tuple[list[dict], pd.DataFrame]:
    """The jobs whose generation and score files both exist, and a ``missing.csv`` table of the others:
    model, dataset, setting, sampler, temperature, failed_rule (the first of generate and score, or
    score_extra for a setting beyond the paper, whose file is missing), missing_file, log (that job's log
    where it ran, else empty: it never started, because a job before it failed). ``logs``: rule (generate,
    score, score_extra) -> log path pattern with {dataset}, {model}, {setting}."""
    done, rows = [], []
    for job in jobs:
        score_rule = "score" if job.get("part", "paper") == "paper" else "score_extra"
        for rule, key in (("generate", "generations"), (score_rule, "scores")):
            if not Path(job[key]).is_file():
                log_path = logs[rule].format(dataset=job["dataset"], model=job["model"], setting=job["setting"])
                rows.append(
                    {
                        "model": job["model"],
                        "dataset": job["dataset"],
                        "setting": job["setting"],
                        "sampler": job["sampler"],
                        "temperature": job["temperature"],
                        "failed_rule": rule,
                        "missing_file": job[key],
                        "log": log_path if Path(log_path).is_file() else "",
                    }
                )
                break
        else:
            done.append(job)
    return done, pd.DataFrame(rows, columns=MISSING_COLUMNS)


BOOTSTRAP_COLUMNS = PER_STEP_KEYS + ["setting", "replicate", "entce_mean", "entce_pooled"]


def aggregate(
    jobs: list[dict],
    per_step_out: str,
    summary_out: str,
    max_len: int,
    per_prompt_out: str | None = None,
    missing_out: str | None = None,
    missing: pd.DataFrame | None = None,
    reference_start: int = 1,
    fidelity: str = "exact",
    bootstrap_out: str | None = None,
    n_boot: int = 0,
    seed: int = 0,
    estimator: str = "mean",
) -> None:
    """Build ``per_step.parquet`` and ``summary.csv`` from generation and score files, and
    ``missing.csv`` (``missing``: the settings left out, :func:`split_finished`; none in a full run).
    ``reference_start``: see the module docstring; ``fidelity``: recorded in every summary row.
    ``bootstrap_out``: ``entce_bootstrap.parquet``, ``n_boot`` replicates per setting (BOOTSTRAP_COLUMNS;
    replicate seeds from ``seed`` and the setting's model, dataset and slug; the standard errors of both estimators
    come from them, written or not). ``estimator``: the headline (``analysis.estimator``, :func:`headline_columns`).

    Each job dict: model, family, n_params (or None: then the counted non-embedding parameters),
    instruct, dataset, sampler, sampler_param, temperature, setting (slug), checkpoint_of (the
    trained model a checkpoint belongs to, else None), train_tokens (None for hub models),
    generations (path), scores (path).
    """

    per_step, summary, prompts, boots = [], [], [], []
    for job in jobs:
        expect = {
            "model": job["model"],
            "sampler": job["sampler"],
            "temperature": job["temperature"],
            "sampler_param": job.get("sampler_param"),
        }
        # provenance (sidecars since the content hashes; older ones carry no dataset or upstream and pass on)
        meta, side_sc = read_sidecar(job["generations"]), read_sidecar(job["scores"])
        gen = read_parquet(job["generations"], {**expect, **({"dataset": job["dataset"]} if "dataset" in meta else {})})
        sc = read_parquet(
            job["scores"], {"model": job["model"], **({"dataset": job["dataset"]} if "dataset" in side_sc else {})}
        )
        up_gen, up_sc = meta.get("upstream"), side_sc.get("upstream")
        if up_gen and up_sc and up_gen.get("prompts") != up_sc.get("prompts"):
            raise IntermediateFileError(
                f"{job['generations']} and {job['scores']} were made from different prompts files "
                f"(SHA-256 {str(up_gen.get('prompts'))[:12]}… and {str(up_sc.get('prompts'))[:12]}…). "
                f"{redo_hint(job['scores'])}"
            )
        ref = sc[sc["setting"] == job["setting"]]
        if ref.empty:
            raise IntermediateFileError(
                f"{job['scores']}: has no rows for sampler setting {job['setting']}, which the "
                f"configuration runs. {redo_hint(job['scores'])}"
            )
        if sorted(gen["example_id"]) != sorted(ref["example_id"]):
            raise IntermediateFileError(
                f"{job['generations']}: its {len(gen)} prompts are not the {len(ref)} of "
                f"{job['scores']} (one of them was made from other prompts). "
                f"{redo_hint(job['generations'])}"
            )
        check_token_arrays(gen, job["generations"], ["entropy"])
        check_token_arrays(ref, job["scores"], ["logloss", "tf_entropy"])
        job_seed = seed + zlib.crc32(f"{job['model']}/{job['dataset']}/{job['setting']}".encode())
        steps, s, pp, boot = curves(gen, ref, max_len, reference_start, n_boot, job_seed)
        s = {**s, **headline_columns(s, estimator)}
        key = {k: job[k] for k in PER_STEP_KEYS}
        if boot and bootstrap_out:
            boots.append(
                pd.DataFrame(
                    {
                        **key,
                        "setting": job["setting"],
                        "replicate": np.arange(n_boot),
                        "entce_mean": boot["mean"],
                        "entce_pooled": boot["pooled"],
                    }
                )
            )
        prompts.append(pp.assign(**key, sampler_param=job.get("sampler_param"), setting=job["setting"]))
        per_step.append(steps.assign(**key, sampler_param=job.get("sampler_param"), setting=job["setting"]))
        n_params = job.get("n_params") or meta["n_params_nonembedding"]
        summary.append(
            {
                **key,
                "family": job["family"],
                "n_params": int(n_params),
                "n_params_nominal": job.get("n_params_nominal"),
                "n_params_total": meta["n_params_total"],
                "n_params_nonembedding": meta["n_params_nonembedding"],
                "instruct": bool(job["instruct"]),
                "sampler_param": job.get("sampler_param"),
                **s,
                "gen_forward_tokens": meta.get("forward_tokens"),
                "precision": meta.get("precision", "exact"),
                "checkpoint_of": job.get("checkpoint_of"),
                "train_tokens": job.get("train_tokens"),
                "fidelity": fidelity,
            }
        )
    ps = pd.concat(per_step, ignore_index=True)
    ps = ps[PER_STEP_CONTRACT + [c for c in ps.columns if c not in PER_STEP_CONTRACT]]
    cols = [
        "model",
        "family",
        "n_params",
        "instruct",
        "dataset",
        "sampler",
        "temperature",
        "n_prompts",
        "entropy_mean",
        "logloss_mean",
        "tf_entropy_mean",
        "entce",
    ]
    sm = pd.DataFrame(summary)
    sm = sm[cols + [c for c in sm.columns if c not in cols]].sort_values(
        ["dataset", "family", "n_params", "sampler", "temperature"], ignore_index=True
    )
    # every table under a temporary name first, then renamed: a killed job leaves no part of one
    replace_atomically(per_step_out, lambda t: ps.to_parquet(t, index=False))
    replace_atomically(summary_out, lambda t: sm.to_csv(t, index=False, float_format="%.6g"))
    if per_prompt_out:
        pp = pd.concat(prompts, ignore_index=True)
        first = PER_STEP_KEYS + ["sampler_param", "setting", "example_id"]
        pp = pp[first + [c for c in pp.columns if c not in first]]
        replace_atomically(per_prompt_out, lambda t: pp.to_parquet(t, index=False))
    if missing_out:
        miss = missing if missing is not None else pd.DataFrame(columns=MISSING_COLUMNS)
        replace_atomically(missing_out, lambda t: miss.to_csv(t, index=False))
    if bootstrap_out:
        bt = pd.concat(boots, ignore_index=True) if boots else pd.DataFrame(columns=BOOTSTRAP_COLUMNS)
        replace_atomically(bootstrap_out, lambda t: bt[BOOTSTRAP_COLUMNS].to_parquet(t, index=False))
    log.info("summary:\n%s", sm.to_string())


# --------------------------------------------------------------------------------------------------
# The calibrated samplers side by side (entcal.calibration writes the predictors; torch-free here)


def equal_entropy_logloss(temps: pd.DataFrame, entropy: float) -> float:
    """Log loss of plain temperature sampling at the given generation entropy: linear interpolation
    between the model's temperature settings (NaN outside their range: no extrapolation)."""
    t = temps.sort_values("entropy_mean")
    x, y = t["entropy_mean"].to_numpy(), t["logloss_mean"].to_numpy()
    if len(t) < 2 or not (x[0] <= entropy <= x[-1]):
        return float("nan")
    return float(np.interp(entropy, x, y))


def predictor_variants(predictors: list[dict]) -> pd.DataFrame:
    """One row per calibrated model x dataset x predictor, on the same held-out labels: the head the samplers
    use (``head``), the variants of ``calibration.variants``, and the baselines (``constant``,
    ``onestep_linear``: a linear map of the exact one-step lookahead) with the noise ceiling beside them."""
    rows = []
    for p in predictors:
        m = p["metrics"]
        shared = {"model": p["model"], "dataset": p["dataset"], "noise_ceiling_r2": m.get("noise_ceiling_r2")}
        heads = p.get("variants") or [
            {"variant": "head", **{k: m.get(k) for k in ("n_train", "n_test", "r2_test", "rmse_test")}}
        ]
        for v in heads:
            rows.append(
                {
                    **shared,
                    "predictor": v["variant"],
                    "r2_test": v["r2_test"],
                    "r2_test_ci_low": v.get("r2_test_ci_low"),
                    "r2_test_ci_high": v.get("r2_test_ci_high"),
                    "rmse_test": v["rmse_test"],
                    "n_train": v["n_train"],
                    "n_test": v["n_test"],
                }
            )
        rows.append(
            {
                **shared,
                "predictor": "constant",
                "r2_test": m.get("r2_constant", np.nan),
                "rmse_test": m["rmse_constant"],
                "n_train": m["n_train"],
                "n_test": m["n_test"],
            }
        )
        rows.append(
            {
                **shared,
                "predictor": "onestep_linear",
                "r2_test": m["r2_onestep_linear"],
                "r2_test_ci_low": m.get("r2_onestep_linear_ci_low"),
                "r2_test_ci_high": m.get("r2_onestep_linear_ci_high"),
                "rmse_test": m["rmse_onestep_linear"],
                "n_train": m["n_train"],
                "n_test": m["n_test"],
            }
        )
    cols = [
        "model",
        "dataset",
        "predictor",
        "r2_test",
        "r2_test_ci_low",
        "r2_test_ci_high",
        "rmse_test",
        "n_train",
        "n_test",
        "noise_ceiling_r2",
    ]
    return pd.DataFrame(rows, columns=cols)


def calibration_tables(summary: pd.DataFrame, predictors: list[dict], tradeoffs: list[pd.DataFrame]):
    """(calibration table, predictor table, teacher-forced trade-off table); columns in docs/outputs.md."""
    pred_rows = []
    for p in predictors:
        row = {
            "model": p["model"],
            "dataset": p["dataset"],
            **p["metrics"],
            "train_loss_first": p["train_loss_first"],
            "train_loss_last": p["train_loss_last"],
            "n_val": p.get("n_val"),
            "best_step": p.get("best_step"),
            "horizon": p["horizon"],
            "candidates": p["candidates"],
            "label_mean": p["label_mu"],
            "label_forward_tokens": p["label_forward_tokens"],
            "fit_tokens": p["fit_tokens"],
            "fit_positions": p["fit_positions"],
            "mirostat_target": p["mirostat_target"],
        }
        for s, buckets in p["alpha"].items():
            row[f"alpha_{s}"] = ";".join(f"{b['alpha']:.4g}" for b in buckets)
            n = np.array([b["n"] for b in buckets], float)
            gain = np.array([(b["logloss_base"] - b["logloss"]) if b["n"] else 0.0 for b in buckets])
            row[f"fit_logloss_gain_{s}"] = float(np.sum(n * gain) / max(n.sum(), 1))
        for s, e in p.get("equal_entropy_tf", {}).items():
            row[f"tf_entropy_{s}"], row[f"tf_logloss_{s}"] = e["entropy"], e["logloss"]
            row[f"tf_temperature_{s}"], row[f"tf_logloss_temperature_{s}"] = e["temperature"], e["temperature_logloss"]
            row[f"tf_delta_logloss_{s}"] = e["delta_logloss"]
        pred_rows.append(row)
    pred = pd.DataFrame(pred_rows)
    by = {(p["model"], p["dataset"]): p for p in predictors}
    s = summary[summary["model"].isin({p["model"] for p in predictors}) & summary["checkpoint_of"].isna()].copy()
    cols = [
        "model",
        "dataset",
        "n_params",
        "sampler",
        "sampler_param",
        "temperature",
        "entropy_mean",
        "logloss_mean",
        "entce",
        "entce_se",
        "tf_entropy_mean",
        "gen_minus_tf",
        "tf_minus_logloss",
    ]
    out = []
    for (m, d), g in s.groupby(["model", "dataset"]):
        temps = g[g["sampler"] == "ancestral"]
        p = by.get((m, d), {})
        for r in g.itertuples():
            row = {c: getattr(r, c) for c in cols}
            gen_tokens = r.mean_gen_tokens * r.n_prompts
            row["forward_tokens_per_generated_token"] = getattr(r, "gen_forward_tokens", np.nan) / gen_tokens
            fit, k = p.get("fit_tokens", 0), p.get("candidates", 0)
            row["setup_forward_tokens"] = {  # one-off: labels, the alpha fit, the Mirostat target
                "future_entropy": p.get("label_forward_tokens", 0) + fit,
                "one_step_lookahead": fit * (1 + k),
                "mirostat": fit,
            }.get(r.sampler, 0)
            ll_t = equal_entropy_logloss(temps, r.entropy_mean)
            row["logloss_temperature_at_equal_entropy"] = ll_t
            row["delta_logloss_vs_temperature"] = r.logloss_mean - ll_t
            out.append(row)
    table = pd.DataFrame(out)
    tr = pd.concat(tradeoffs, ignore_index=True) if tradeoffs else pd.DataFrame()
    if not tr.empty:
        tr = tr[["model", "dataset", *[c for c in tr.columns if c not in ("model", "dataset")]]]
    return table, pred, tr


def benchmark_table(bench_dir: str | Path) -> pd.DataFrame:
    """Every Snakemake ``benchmark:`` record under ``bench_dir`` in one table, slowest first.

    Columns: ``rule``, ``job`` (the record's path under the rule's folder: its wildcards), then
    Snakemake's own columns (``s`` wall seconds, ``max_rss`` peak resident MB, ``max_vms``,
    ``max_uss``, ``max_pss``, ``io_in``, ``io_out``, ``mean_load``, ``cpu_time``), and
    ``share_of_job_time`` (this job's ``s`` over the sum of all jobs').
    """
    root = Path(bench_dir)
    frames = []
    for f in sorted(root.rglob("*.tsv")):
        rel = f.relative_to(root)
        df = pd.read_csv(f, sep="\t")
        df.insert(0, "job", "/".join(rel.with_suffix("").parts[1:]) or "-")
        df.insert(0, "rule", rel.parts[0].removesuffix(".tsv"))
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["rule", "job", "s", "share_of_job_time"])
    out = pd.concat(frames, ignore_index=True).drop(columns=["h:m:s"], errors="ignore")
    out["share_of_job_time"] = out["s"] / out["s"].sum()
    return out.sort_values("s", ascending=False, ignore_index=True)
