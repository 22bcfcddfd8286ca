"""The calibration study from measured calibrated points (the root searches of :mod:`entcal.root_jobs`): each
search's point with a paired bootstrap over prompts, the difference from temperature, and the declared primary
question with its Holm correction (:func:`entcal.root_search.primary_table`).

``tables/calibration_study.csv`` (with ``calibration.root``): one row per model x dataset x search, the columns of
:data:`entcal.study.STUDY_COLUMNS` (``n_settings`` = the search's steps; ``setting_below``/``setting_above`` = the
knob values of the closest steps on either side of EntCE = 0; ``delta_boot_crosses`` empty) and ``head_seed``,
``knob``, ``knob_at_calibration``, ``entce_at_calibration``, ``entce_se_at_calibration``, ``converged``, ``stop``
(why the search ended), ``point`` (``measured``), ``role`` (``primary`` for the two methods of the primary question,
else ``exploratory``), ``logloss_slope`` (d log loss / d EntCE along the method's curve, :func:`local_slope`) and
``logloss_at_zero`` (the measured log loss moved along that slope to EntCE = 0 exactly: by at most tolerance x se x
|slope|). Log loss, entropy and EntCE are the headline estimator's (``estimator``). Intervals only where the search
converged: ``logloss_ci_*`` the percentile bootstrap over prompts, each replicate moved along the slope to its own
EntCE = 0 (so the interval covers where the point lies as well as the log loss there); ``delta_vs_temperature`` the
difference of ``logloss_at_zero``, ``delta_ci_*`` paired (the same prompt draws for every search of the model x
dataset), uncorrected. ``tables/calibration_roots.csv``: every step of
every search (:data:`entcal.root_search.ROOT_STEP_COLUMNS`).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from entcal.curves import boot_weights, ragged_matrix, replicate_points
from entcal.files import read_parquet, read_sidecar
from entcal.root_search import METHOD_KNOB, primary_table
from entcal.study import STUDY_COLUMNS

MEASURED_COLUMNS = STUDY_COLUMNS + [
    "head_seed",
    "knob",
    "knob_at_calibration",
    "entce_at_calibration",
    "entce_se_at_calibration",
    "converged",
    "stop",
    "point",
    "role",
    "logloss_slope",
    "logloss_at_zero",
]


def local_slope(steps: pd.DataFrame) -> float:
    """d(log loss)/d(EntCE) along a method's curve near its point: the OLS slope of log loss on the knob over the
    search's steps divided by that of EntCE (log loss is a deterministic function of the knob, EntCE a noisy one, so
    regressing one on the other would shrink the slope). NaN with fewer than two knob values or no EntCE trend."""
    x = steps["knob"].to_numpy(float)
    if len(np.unique(x)) < 2:
        return float("nan")
    bl = np.polyfit(x, steps["logloss"].to_numpy(float), 1)[0]
    be = np.polyfit(x, steps["entce"].to_numpy(float), 1)[0]
    return float(bl / be) if be else float("nan")


def point_matrices(pp: pd.DataFrame, side: dict, ids: list) -> tuple[np.ndarray, np.ndarray]:
    """(H, L) prompt x step matrices of a calibrated point, prompts in ``ids`` order, as :func:`entcal.curves.curves`
    builds them (reference tokens from ``reference_start``, ``max_len`` steps at most)."""
    pp = pp.set_index("example_id").loc[ids]
    skip = int(side["reference_start"]) - 1
    ll = [np.asarray(x)[skip:] for x in pp["logloss"]]
    width = int(min(side["max_len"], max(max(len(x) for x in pp["entropy"]), max(len(x) for x in ll))))
    return ragged_matrix(pp["entropy"], width), ragged_matrix(ll, width)


def _ci(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    return (float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))) if len(x) > 1 else (np.nan, np.nan)


def _bracket(steps: pd.DataFrame) -> tuple[str, str]:
    neg, pos = steps[steps["entce"] < 0], steps[steps["entce"] > 0]
    below = f"{neg.loc[neg['entce'].idxmax(), 'knob']:g}" if len(neg) else ""
    above = f"{pos.loc[pos['entce'].idxmin(), 'knob']:g}" if len(pos) else ""
    return below, above


def measured_study(
    searches: list[pd.DataFrame],
    points: list[tuple[dict, pd.DataFrame]],
    *,
    n_boot: int,
    seed: int,
    estimator: str,
    primary: dict,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(calibration_study, calibration_roots, calibration_primary) from every search's step table and its calibrated
    point (sidecar, per-prompt arrays)."""
    roots = pd.concat(searches, ignore_index=True) if searches else pd.DataFrame()
    method, against = primary.get("method", "future_entropy"), primary.get("against", "ancestral")
    rows, cells = [], []
    by_cell: dict[tuple, list] = {}
    for side, pp in points:
        if side["estimator"] != estimator:
            raise ValueError(
                f"the root search of {side['model']}/{side['dataset']}/{side['method']} used the {side['estimator']} "
                f"estimator, the configuration's is {estimator}: rerun it (snakemake -R calibration_root)"
            )
        by_cell.setdefault((side["model"], side["dataset"]), []).append((side, pp))
    for (m, d), found in sorted(by_cell.items()):
        ids = sorted(set.intersection(*(set(pp["example_id"]) for _, pp in found)))
        W = boot_weights(len(ids), n_boot, seed + zlib.crc32(f"{m}/{d}".encode()))
        one = np.ones((1, len(ids)))
        est, boot, found_steps = {}, {}, {}
        for side, pp in found:
            key = (side["method"], side["head_seed"])
            steps = roots[
                (roots["model"] == m)
                & (roots["dataset"] == d)
                & (roots["method"] == key[0])
                & (roots["head_seed"].fillna(-1) == (key[1] if key[1] is not None else -1))
            ]
            H, L = point_matrices(pp, side, ids)
            (h0,), (l0,) = replicate_points(H, L, one, estimator)
            hb, lb = replicate_points(H, L, W, estimator)
            # where the point lies is uncertain too: move each replicate along the curve to its own EntCE = 0
            slope = local_slope(steps)
            s_ = slope if np.isfinite(slope) else 0.0
            z0, zb = l0 - s_ * (h0 - l0), lb - s_ * (hb - lb)
            found_steps[key] = (steps, slope, z0)
            est[key], boot[key] = (side, h0, l0), zb if side["converged"] else np.full(len(W), np.nan)
        t_key = next((k for k in est if k[0] == against), None)
        t_ok = t_key is not None and est[t_key][0]["converged"]
        deltas, dboot = [], []
        for key, (side, h0, l0) in sorted(est.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)):
            steps, slope, z0 = found_steps[key]
            at = steps.iloc[side["index"]]
            below, above = _bracket(steps)
            diff = boot[key] - boot[t_key] if t_ok else np.full(len(W), np.nan)
            delta = z0 - found_steps[t_key][2] if t_ok and side["converged"] else np.nan
            if key[0] == method and np.isfinite(delta):
                deltas.append(delta)
                dboot.append(diff)
            fpt = steps["forward_tokens"] / (steps["mean_gen_tokens"] * steps["n_prompts"])
            lo, hi = _ci(boot[key]) if side["converged"] else (np.nan, np.nan)
            dlo, dhi = _ci(diff) if np.isfinite(delta) else (np.nan, np.nan)
            rows.append(
                {
                    "model": m,
                    "dataset": d,
                    "method": key[0],
                    "n_settings": len(steps),
                    "n_prompts": len(ids),
                    "entce_min": float(steps["entce"].min()),
                    "entce_max": float(steps["entce"].max()),
                    "crosses": bool(side["crosses"]),
                    "setting_below": below,
                    "setting_above": above,
                    "entropy_at_calibration": h0,
                    "logloss_at_calibration": l0,
                    "logloss_ci_low": lo,
                    "logloss_ci_high": hi,
                    "delta_vs_temperature": delta,
                    "delta_ci_low": dlo,
                    "delta_ci_high": dhi,
                    "delta_boot_crosses": np.nan,
                    "forward_tokens_per_generated_token": float(fpt.mean()),
                    "n_boot": n_boot,
                    "estimator": estimator,
                    "head_seed": key[1],
                    "knob": METHOD_KNOB.get(key[0], ""),
                    "knob_at_calibration": float(side["knob"]),
                    "entce_at_calibration": float(at["entce"]),
                    "entce_se_at_calibration": float(at["entce_se"]),
                    "converged": bool(side["converged"]),
                    "stop": side["stop"],
                    "point": "measured",
                    "logloss_slope": slope,
                    "logloss_at_zero": z0,
                    "role": "primary" if key[0] in (method, against) else "exploratory",
                }
            )
        n_seeds = sum(1 for k in est if k[0] == method)
        cells.append(
            {
                "model": m,
                "dataset": d,
                "deltas": deltas,
                "n_head_seeds": n_seeds,
                "boot": np.mean(dboot, axis=0) if dboot else [],
            }
        )
    prim = primary_table(
        cells,
        primary.get("question", f"{method} minus {against} log loss at EntCE = 0, per model x dataset"),
        method,
        against,
        primary.get("level", 0.05),
        estimator,
    )
    return pd.DataFrame(rows, columns=MEASURED_COLUMNS), roots, prim


def primary_answer(prim: pd.DataFrame) -> list[str]:
    """One sentence per cell of the primary question."""
    out = []
    for r in prim.itertuples():
        if pd.isna(r.delta):
            out.append(f"{r.model} / {r.dataset}: no answer (a search did not converge: {r.n_converged} heads).")
            continue
        verdict = "resolved" if r.reject else "not resolved"
        out.append(
            f"{r.model} / {r.dataset}: {r.method} - {r.against} log loss at EntCE = 0: {r.delta:+.4f} nats, "
            f"Holm-corrected interval [{r.ci_low:+.4f}, {r.ci_high:+.4f}] (p = {r.p_value:.3g}, Holm {r.p_holm:.3g}: "
            f"{verdict}); head seeds {r.delta_seed_min:+.4f} to {r.delta_seed_max:+.4f} (sd {r.delta_seed_sd:.4f}), "
            f"prompts alone [{r.prompt_ci_low:+.4f}, {r.prompt_ci_high:+.4f}]."
        )
    return out


def recompute(results_dir: str, out_dir: str) -> list[str]:
    """The study's three tables recomputed from a finished run's root files (each checked against its sidecar's
    SHA-256) with this version's code and the run's own settings (``config.effective.yaml``): for a run made before
    a change to this module. Returns the answer lines."""
    rd, out = Path(results_dir), Path(out_dir)
    cfg = yaml.safe_load((rd / "config.effective.yaml").read_text())
    points = sorted(rd.glob("calibration/*/*/root/*.point.parquet"))
    searches = [p.with_name(p.name.replace(".point.parquet", ".parquet")) for p in points]
    if not points:
        raise FileNotFoundError(f"{rd}: no root search files (calibration/*/*/root/*.point.parquet)")
    study, roots, prim = measured_study(
        [read_parquet(p) for p in searches],
        [(read_sidecar(p), read_parquet(p)) for p in points],
        n_boot=cfg["analysis"]["n_boot"],
        seed=cfg["seed"],
        estimator=cfg["analysis"]["estimator"],
        primary=cfg["calibration"].get("primary") or {},
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, t in (("calibration_study", study), ("calibration_roots", roots), ("calibration_primary", prim)):
        t.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
    return primary_answer(prim)


if __name__ == "__main__":  # python -m entcal.calibrated_points RESULTS_DIR OUT_DIR
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m entcal.calibrated_points RESULTS_DIR OUT_DIR")
    print("\n".join(recompute(sys.argv[1], sys.argv[2])))
