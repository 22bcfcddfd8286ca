"""Calibrated points measured by root finding on real generations, and the study's primary test.

A *search* (``calibration_root`` rule, :mod:`entcal.root_jobs`) moves one method's knob x: the temperature for
``ancestral``, the tilt's alpha (the same in every step bucket) for ``future_entropy``. Each step generates and
scores at a new x, and measures EntCE(x) under the configuration's headline estimator (``analysis.estimator``) with
its bootstrap standard error. :func:`next_knob` picks the next x:

- from the two starting values, while every EntCE has one sign, a secant step towards EntCE = 0 (20 % beyond it, at
  most twice the span measured so far, inside ``bounds``);
- once two values bracket EntCE = 0, false position inside the bracket, and bisection whenever the last two steps
  fell on the same side (the Illinois safeguard: a curved EntCE cannot stall the search);
- it stops when |EntCE| <= ``tolerance_se`` x its standard error (``converged``), at ``max_steps`` (``max_steps``:
  the point is the step closest to zero in standard errors, with no interval) or when a bound is reached without a
  crossing (``no_crossing``: the method does not reach calibration there).

The calibrated point is measured where it is claimed: the log loss at EntCE ~ 0 is the reference log loss at the
final knob value, not a line between two settings. Where log loss is convex in EntCE (it is, along temperature and
along the tilt) a straight line between two bracketing settings overstates the log loss at the crossing, by more
the wider the bracket (:func:`linear_crossing`, kept for the tests that show it).

:func:`entcal.curves.replicate_points` gives every prompt-resampled replicate's (entropy, log loss) under either
estimator, exactly (from the replicate's per-step sums); :func:`primary_table` answers the declared primary
question with a Holm correction over its cells.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

METHOD_KNOB = {"ancestral": "temperature", "future_entropy": "alpha"}

ROOT_STEP_COLUMNS = [
    "model",
    "dataset",
    "method",
    "head_seed",
    "step",
    "knob",
    "temperature",
    "alpha",
    "entropy",
    "logloss",
    "entce",
    "entce_se",
    "entce_mean",
    "entce_pooled",
    "estimator",
    "n_prompts",
    "mean_gen_tokens",
    "forward_tokens",
    "seconds",
    "decision",
]


def root_problems(config: dict) -> list[str]:
    """The root searches' settings that cannot work (``calibration.root``, ``calibration.primary``), each with the
    fix: a search needs a standard error at every step (``analysis.n_boot``), its two starting values inside its
    bounds, and the primary question's two methods among the searched ones."""
    cal = config.get("calibration") or {}
    root, primary, out = cal.get("root") or {}, cal.get("primary") or {}, []
    methods = root.get("methods") or {}
    if not methods:  # no searches (the schema fills in the other keys' defaults)
        return [
            "calibration.primary.question: a primary question needs calibration.root.methods (the searches it compares)"
        ] * bool(primary.get("question"))
    if config["analysis"].get("n_boot", 0) < 20:
        out.append(
            f"calibration.root: every step's EntCE needs its bootstrap standard error; analysis.n_boot is "
            f"{config['analysis'].get('n_boot', 0)}, set it to 1000 or more"
        )
    bounds = {"ancestral": [0.2, 4.0], "future_entropy": [-0.9, 4.0], **(root.get("bounds") or {})}
    for m, start in methods.items():
        lo, hi = bounds[m]
        if not lo < hi or not all(lo <= x <= hi for x in start) or start[0] == start[1]:
            out.append(
                f"calibration.root.methods.{m}: the starting values {start} must differ and lie inside its bounds "
                f"{[lo, hi]} (calibration.root.bounds.{m})"
            )
    for key in ("method", "against"):
        m = primary.get(key, {"method": "future_entropy", "against": "ancestral"}[key])
        if m not in methods:
            out.append(f"calibration.primary.{key}: {m!r} has no search; add it to calibration.root.methods")
    return out


def setting_of(method: str, x: float) -> dict:
    """The sampler setting of knob value ``x`` (a ``generate_file`` / ``score_file`` setting without its slug)."""
    if method == "ancestral":
        return {"sampler": "ancestral", "temperature": float(x), "param": None}
    if method == "future_entropy":
        return {"sampler": "future_entropy", "temperature": 1.0, "param": float(x)}
    raise ValueError(f"calibration.root.methods: no knob for method {method!r} (known: {', '.join(METHOD_KNOB)})")


def next_knob(
    xs: list[float],
    es: list[float],
    ses: list[float],
    *,
    bounds: tuple[float, float],
    tolerance_se: float,
    max_steps: int,
    overshoot: float = 1.2,
) -> tuple[float | None, str]:
    """The next knob value to measure and why (``extend`` or ``bracket``), or None and why the search stops
    (``converged``, ``max_steps``, ``no_crossing``, ``flat``). ``xs``, ``es``, ``ses``: the knob values measured so
    far (at least two), their EntCE and its standard error, in the order measured."""
    if len(xs) < 2:
        raise ValueError("a search starts from two knob values")
    if abs(es[-1]) <= tolerance_se * ses[-1]:
        return None, "converged"
    if len(xs) >= max_steps:
        return None, "max_steps"
    lo_b, hi_b = bounds
    x, e = np.asarray(xs, float), np.asarray(es, float)
    neg, pos = np.flatnonzero(e < 0), np.flatnonzero(e > 0)
    if len(neg) and len(pos):
        a, b = neg[np.argmax(e[neg])], pos[np.argmin(e[pos])]
        xa, ea, xb, eb = x[a], e[a], x[b], e[b]
        stalled = len(es) >= 3 and np.sign(es[-1]) == np.sign(es[-2])
        nxt = 0.5 * (xa + xb) if stalled else xa - ea * (xb - xa) / (eb - ea)
        width = abs(xb - xa)
        nxt = min(max(nxt, min(xa, xb) + 0.05 * width), max(xa, xb) - 0.05 * width)
        return round(float(nxt), 6), "bracket"
    # one sign so far: a secant step through the two values closest to zero, a little beyond the root
    i1, i0 = np.argsort(np.abs(e), kind="stable")[:2]
    slope = (e[i1] - e[i0]) / (x[i1] - x[i0]) if x[i1] != x[i0] else 0.0
    if not np.isfinite(slope) or slope == 0:
        return None, "flat"
    span = max(x.max() - x.min(), 1e-3)
    step = float(np.clip(-overshoot * e[i1] / slope, -2 * span, 2 * span))
    nxt = float(np.clip(x[i1] + step, lo_b, hi_b))
    if np.any(np.isclose(x, nxt, rtol=0, atol=1e-9)):
        return None, "no_crossing"
    return round(nxt, 6), "extend"


def search(evaluate, start: list[float], **stop) -> tuple[list[float], list[float], list[float], list[str]]:
    """Run one search: ``evaluate(x)`` -> (EntCE, its standard error) measures a knob value; ``start``: the two
    starting values; ``stop``: :func:`next_knob`'s keywords. Returns the knob values in the order measured, their
    EntCE and standard errors, and after each step what the search decided (``start``, ``extend``, ``bracket``, or
    the reason it stopped)."""
    xs, es, ses, decisions = [], [], [], []
    pending = list(start)
    while True:
        x = pending.pop(0)
        e, se = evaluate(x)
        xs.append(x), es.append(e), ses.append(se)
        nxt, why = (pending[0], "start") if pending else next_knob(xs, es, ses, **stop)
        decisions.append(why)
        if nxt is None:
            return xs, es, ses, decisions
        if not pending:
            pending.append(nxt)


def final_point(steps: pd.DataFrame, tolerance_se: float) -> dict:
    """The measured calibrated point of one search (rows of its step table, in order): the last step when it met
    the tolerance, else the step closest to EntCE = 0 in standard errors. ``crosses``: some two steps bracket
    EntCE = 0 (or one is exactly there); ``converged``: the point met the tolerance."""
    e, se = steps["entce"].to_numpy(float), steps["entce_se"].to_numpy(float)
    converged = bool(len(e) and abs(e[-1]) <= tolerance_se * se[-1])
    i = len(e) - 1 if converged else int(np.nanargmin(np.abs(e) / se))
    crosses = bool((e < 0).any() and (e > 0).any()) or bool((e == 0).any()) or converged
    return {"index": i, "converged": converged, "crosses": crosses}


def linear_crossing(x: np.ndarray, e: np.ndarray, ll: np.ndarray) -> tuple[float, float]:
    """(x*, log loss*) where the straight line between the two values bracketing EntCE = 0 meets it (the earlier
    study's estimate, biased where log loss is curved); NaN where no pair brackets it."""
    o = np.argsort(x, kind="stable")
    x, e, ll = np.asarray(x, float)[o], np.asarray(e, float)[o], np.asarray(ll, float)[o]
    for i in range(len(e) - 1):
        if e[i] * e[i + 1] < 0:
            t = e[i] / (e[i] - e[i + 1])
            return float(x[i] + t * (x[i + 1] - x[i])), float(ll[i] + t * (ll[i + 1] - ll[i]))
    return float("nan"), float("nan")


PRIMARY_COLUMNS = [
    "question",
    "model",
    "dataset",
    "method",
    "against",
    "n_head_seeds",
    "n_converged",
    "delta",
    "delta_seed_sd",
    "delta_seed_min",
    "delta_seed_max",
    "delta_prompt_se",
    "delta_se",
    "z",
    "p_value",
    "p_holm",
    "reject",
    "ci_low",
    "ci_high",
    "ci_level",
    "prompt_ci_low",
    "prompt_ci_high",
    "n_cells",
    "fwer",
    "estimator",
]


def primary_table(cells: list[dict], question: str, method: str, against: str, fwer: float, estimator: str):
    """The primary question over its cells, Holm-corrected. Each cell: model, dataset, ``deltas`` (one per converged
    head seed: log loss of ``method`` minus ``against`` at their measured points), ``n_head_seeds`` and ``boot``
    (replicates of the mean over seeds of the paired difference, the same prompt draws for every search).

    ``delta`` is the mean over seeds; its standard error adds the bootstrap variance over prompts and the head-seed
    variance of a mean (sd^2 / n); z = delta / se, a two-sided normal p-value, Holm over the cells with a known
    delta (statsmodels). ``ci_low``/``ci_high``: delta +- the normal quantile at 1 - fwer / (2 m), the Bonferroni
    interval that agrees with Holm's first step (simultaneous over the m cells); ``prompt_ci_*``: the percentile
    bootstrap interval of the prompts alone, uncorrected. A cell without a converged search has no delta."""
    from scipy.stats import norm
    from statsmodels.stats.multitest import multipletests

    rows = []
    for c in cells:
        d, b = np.asarray(c["deltas"], float), np.asarray(c.get("boot", []), float)
        b = b[np.isfinite(b)]
        row = {
            "question": question,
            "model": c["model"],
            "dataset": c["dataset"],
            "method": method,
            "against": against,
            "n_head_seeds": c["n_head_seeds"],
            "n_converged": len(d),
            "estimator": estimator,
        }
        if len(d) and len(b) > 1:
            sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
            prompt_se = float(b.std(ddof=1))
            se = math.sqrt(prompt_se**2 + (sd**2 / len(d) if len(d) > 1 else 0.0))
            row.update(
                delta=float(d.mean()),
                delta_seed_sd=sd,
                delta_seed_min=float(d.min()),
                delta_seed_max=float(d.max()),
                delta_prompt_se=prompt_se,
                delta_se=se,
                z=float(d.mean() / se) if se > 0 else float("nan"),
                prompt_ci_low=float(np.percentile(b, 2.5)),
                prompt_ci_high=float(np.percentile(b, 97.5)),
            )
        rows.append(row)
    out = pd.DataFrame(rows, columns=PRIMARY_COLUMNS)
    ok = out["z"].notna().to_numpy() if len(out) else np.zeros(0, bool)
    m = int(ok.sum())
    out["n_cells"], out["fwer"] = m, fwer
    if m:
        p = 2 * norm.sf(np.abs(out.loc[ok, "z"].to_numpy(float)))
        reject, p_holm, _, _ = multipletests(p, alpha=fwer, method="holm")
        q = norm.ppf(1 - fwer / (2 * m))

        def spread(values, fill):  # the cells with a delta get their values, the others ``fill``
            a = np.full(len(out), fill, dtype=object)
            a[np.flatnonzero(ok)] = values
            return a

        out["p_value"], out["p_holm"] = spread(p, np.nan).astype(float), spread(p_holm, np.nan).astype(float)
        out["reject"] = spread(reject, None)
        out["ci_low"] = out["delta"] - q * out["delta_se"]
        out["ci_high"] = out["delta"] + q * out["delta_se"]
        out["ci_level"] = np.where(ok, 1 - fwer / m, np.nan)
    return out
