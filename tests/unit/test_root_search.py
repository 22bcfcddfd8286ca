"""Calibrated points by root finding (entcal.root_search, entcal.calibrated_points): the straight line's bias on convex
curves with unequal brackets, and its absence in a search; the estimators of a replicate; Holm; no interval where
no crossing exists."""

import numpy as np
import pandas as pd
import pytest

from entcal.calibrated_points import measured_study
from entcal.curves import curves, replicate_points
from entcal.root_search import (
    final_point,
    linear_crossing,
    next_knob,
    primary_table,
    search,
)

C = 0.5  # the same curvature of log loss in EntCE for both methods: L = L0 + C * EntCE^2


def method(x0: float, slope: float, l0: float):
    """A method whose EntCE is linear in its knob (root x0) and whose log loss is convex in EntCE, minimal (l0) at
    calibration: where the straight line between two brackets must overstate the log loss."""
    return lambda x: slope * (x - x0), lambda x: l0 + C * (slope * (x - x0)) ** 2


def test_a_straight_line_between_unequal_brackets_is_biased_and_the_search_is_not():
    # the tilt's bracket spans 1.22 nats of EntCE (-0.60..+0.62), temperature's 0.48, as in the earlier study; the
    # two methods have the same log loss at EntCE = 0, so the true difference is 0
    tilt_e, tilt_l = method(0.0, -6.1, 3.80)  # alpha from -0.1 to +0.1 spans +0.61..-0.61
    temp_e, temp_l = method(1.0, 4.8, 3.80)  # T from 0.95 to 1.05 spans -0.24..+0.24
    a = np.array([-0.1, 0.1016])
    t = np.array([0.95, 1.05])
    _, lin_tilt = linear_crossing(a, tilt_e(a), tilt_l(a))
    _, lin_temp = linear_crossing(t, temp_e(t), temp_l(t))
    bias = lin_tilt - lin_temp
    # the line's value at EntCE = 0 is L0 + C |e_a| e_b: 0.5 * (0.61 * 0.62 - 0.24^2) = 0.16 nats of pure bias
    assert bias == pytest.approx(C * (0.61 * 6.1 * 0.1016 - 0.24**2), rel=1e-6) and bias > 0.15
    se = 0.04
    found = {}
    for name, (e, ll, start, bounds) in {
        "tilt": (tilt_e, tilt_l, [-0.1, 0.1016], (-0.9, 4.0)),
        "temp": (temp_e, temp_l, [0.95, 1.05], (0.2, 4.0)),
    }.items():
        xs, es, ses, why = search(lambda x: (float(e(x)), se), start, bounds=bounds, tolerance_se=0.25, max_steps=8)
        assert why[-1] == "converged" and abs(es[-1]) <= 0.25 * se
        found[name] = ll(xs[-1])  # log loss measured at the final knob value
    # measured where EntCE ~ 0: the difference is within C * (0.25 se)^2 of the truth, 0
    assert abs(found["tilt"] - found["temp"]) <= C * (0.25 * se) ** 2 + 1e-12
    assert abs(found["tilt"] - found["temp"]) < bias / 100


def test_a_search_extends_a_one_sided_start_then_brackets_and_stops_at_a_bound_without_a_crossing():
    e = lambda x: 2.0 * (x - 1.6)  # noqa: E731 - both starting temperatures below the root
    xs, es, _, why = search(lambda x: (e(x), 0.05), [0.9, 1.0], bounds=(0.2, 4.0), tolerance_se=0.25, max_steps=8)
    assert why[:2] == ["start", "extend"] and why[-1] == "converged"
    assert min(es) < 0 < max(es) or abs(es[-1]) <= 0.0125
    # a method that never reaches EntCE = 0 inside its bounds stops there and says so
    xs, es, _, why = search(
        lambda x: (1.0 + 0.1 * x, 0.05), [0.9, 1.0], bounds=(0.2, 4.0), tolerance_se=0.25, max_steps=12
    )
    assert why[-1] == "no_crossing" and all(v > 0 for v in es) and min(xs) == pytest.approx(0.2)
    # a budget that ends first: max_steps, and the point is the closest step, not converged, no crossing claimed
    xs, es, ses, why = search(
        lambda x: (np.sign(x - 1.3) * 0.5 + (x - 1.3), 0.01),
        [0.9, 1.0],
        bounds=(0.2, 4.0),
        tolerance_se=0.25,
        max_steps=3,
    )
    assert why[-1] == "max_steps" and len(xs) == 3
    steps = pd.DataFrame({"entce": es, "entce_se": ses})
    pt = final_point(steps, 0.25)
    assert not pt["converged"] and pt["index"] == int(np.argmin(np.abs(es)))


def test_next_knob_bisects_when_false_position_stalls():
    # a strongly curved EntCE keeps landing on one side: the third step on the same side bisects the bracket
    x, why = next_knob(
        [0.0, 1.0, 0.1, 0.2], [-1.0, 10.0, -0.9, -0.8], [0.01] * 4, bounds=(-1, 2), tolerance_se=0.25, max_steps=9
    )
    assert why == "bracket" and x == pytest.approx((0.2 + 1.0) / 2)


def test_replicate_points_are_the_estimators_of_curves_exactly():
    rng = np.random.default_rng(3)
    n, T = 7, 12
    ent = [rng.gamma(2.0, 1.0, size=rng.integers(3, T + 1)) for _ in range(n)]  # generations ending early
    ll = [rng.gamma(2.0, 1.2, size=T + 3) for _ in range(n)]
    gen = pd.DataFrame(
        {
            "example_id": range(n),
            "entropy": ent,
            "n_tokens": [len(x) for x in ent],
            "stopped_at_eos": [len(x) < T for x in ent],
        }
    )
    ref = pd.DataFrame({"example_id": range(n), "logloss": ll, "tf_entropy": ll, "n_outside": 0, "n_tokens": T + 3})
    _, s, _, _ = curves(gen, ref, T)
    H = np.full((n, T), np.nan)
    L = np.full((n, T), np.nan)
    for i in range(n):
        H[i, : len(ent[i])], L[i] = ent[i], ll[i][:T]
    (h,), (l,) = replicate_points(H, L, np.ones((1, n)), "mean")
    assert h == pytest.approx(s["entropy_mean"], abs=1e-12) and l == pytest.approx(s["logloss_mean"], abs=1e-12)
    (h,), (l,) = replicate_points(H, L, np.ones((1, n)), "pooled")
    assert h == pytest.approx(s["entropy_pooled"], abs=1e-12) and l == pytest.approx(s["logloss_pooled"], abs=1e-12)
    # a replicate with prompt 0 twice and prompt 1 left out is the estimate on that multiset, in float64
    w = np.ones((1, n))
    w[0, 0], w[0, 1] = 2, 0
    rows = [0, 0] + list(range(2, n))
    (h,), _ = replicate_points(H, L, w, "pooled")
    assert h == pytest.approx(np.nanmean(H[rows]), abs=1e-12)


def test_holm_over_the_cells_and_no_answer_for_a_cell_without_a_measured_point():
    rng = np.random.default_rng(0)
    cells = [
        {
            "model": "m",
            "dataset": d,
            "deltas": [mu, mu + 0.001, mu - 0.001],
            "n_head_seeds": 3,
            "boot": rng.normal(mu, 0.004, 4000),
        }
        for d, mu in [("a", 0.02), ("b", 0.009), ("c", 0.001)]
    ]
    cells.append({"model": "m", "dataset": "d", "deltas": [], "n_head_seeds": 3, "boot": []})
    t = primary_table(cells, "q", "future_entropy", "ancestral", 0.05, "mean").set_index("dataset")
    assert t.loc["d", ["delta", "p_value", "p_holm", "ci_low", "ci_high"]].isna().all()
    assert (t["n_cells"] == 3).all()
    # Holm by hand: sorted p, multiplied by m, m - 1, ..., made monotone, capped at 1
    p = t.loc[["a", "b", "c"], "p_value"].to_numpy()
    order = np.argsort(p)
    adj = np.minimum(1, np.maximum.accumulate(p[order] * np.array([3, 2, 1])))
    assert t.loc[["a", "b", "c"], "p_holm"].to_numpy()[order] == pytest.approx(adj)
    # the standard error adds the prompts' and the head seeds' (sd^2 / n)
    se = np.sqrt(np.std(cells[0]["boot"], ddof=1) ** 2 + np.std(cells[0]["deltas"], ddof=1) ** 2 / 3)
    assert t.loc["a", "delta_se"] == pytest.approx(se)
    assert bool(t.loc["a", "reject"]) and not bool(t.loc["c", "reject"])
    # the corrected interval is wider than an uncorrected 95 % one
    assert t.loc["a", "ci_high"] - t.loc["a", "ci_low"] > 2 * 1.96 * se


def _point(model, dataset, method_, seed, e_steps, knob, H, L, converged, ll_steps=2.0):
    steps = pd.DataFrame(
        {
            "model": model,
            "dataset": dataset,
            "method": method_,
            "head_seed": seed,
            "step": range(len(e_steps)),
            "knob": knob,
            "entce": e_steps,
            "logloss": ll_steps,  # flat by default: no slope to move the point along
            "entce_se": 0.1,
            "forward_tokens": 100.0,
            "mean_gen_tokens": 10.0,
            "n_prompts": H.shape[0],
        }
    )
    side = {
        "model": model,
        "dataset": dataset,
        "method": method_,
        "head_seed": seed,
        "estimator": "mean",
        "stop": "converged" if converged else "no_crossing",
        "index": len(e_steps) - 1,
        "converged": converged,
        "crosses": converged,
        "knob": knob[-1],
        "reference_start": 1,
        "max_len": H.shape[1],
    }
    pp = pd.DataFrame({"example_id": range(H.shape[0]), "entropy": list(H), "logloss": list(L)})
    return steps, (side, pp)


def test_the_measured_study_gives_no_interval_where_a_search_never_crossed():
    rng = np.random.default_rng(1)
    H, L = rng.gamma(2, 1, (8, 6)), rng.gamma(2, 1, (8, 6))
    a = _point("m", "d", "ancestral", None, [-0.3, 0.01], [0.9, 1.0], H, L, True)
    b = _point("m", "d", "future_entropy", 0, [0.5, 0.4, 0.3], [0.0, 0.1, 0.2], H + 0.1, L + 0.05, False)
    c = _point("m", "d", "future_entropy", 1, [0.2, -0.01], [0.0, 0.1], H, L + 0.02, True)
    study, _, prim = measured_study(
        [a[0], b[0], c[0]], [a[1], b[1], c[1]], n_boot=200, seed=0, estimator="mean", primary={}
    )
    s = study.set_index(study["head_seed"].fillna(-1).astype(int))
    assert s.loc[0, ["logloss_ci_low", "logloss_ci_high", "delta_vs_temperature", "delta_ci_low"]].isna().all()
    assert not s.loc[0, "converged"] and np.isfinite(s.loc[0, "logloss_at_calibration"])
    # the converged tilt: its log loss exceeds temperature's by exactly the 0.02 added to every token
    assert s.loc[1, "delta_vs_temperature"] == pytest.approx(0.02)
    assert s.loc[1, "delta_ci_low"] == pytest.approx(0.02) and s.loc[1, "delta_ci_high"] == pytest.approx(0.02)
    assert prim.loc[0, "n_converged"] == 1 and prim.loc[0, "n_head_seeds"] == 2


def _config(name):
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[2]
    cfg = yaml.safe_load((root / "config" / name).read_text())
    validate(cfg, str(root / "config" / "schema.yaml"), set_default=True)
    return cfg


def test_only_a_configuration_that_names_methods_runs_searches_and_a_broken_one_is_named():
    import copy

    from entcal.root_search import root_problems
    from entcal.grid import Grid

    for name in ("demo.yaml", "config.yaml"):  # the schema fills in root's other defaults: still no searches
        cfg = _config(name)
        assert Grid(cfg).root_searches() == [] and Grid(cfg).head_seeds() == [] and root_problems(cfg) == []
    study = _config("calibration_study.yaml")
    grid = Grid(study)
    assert grid.root_searches() == ["ancestral"] + [f"future_entropy-s{s}" for s in (0, 1, 2)]
    assert len(grid.root_files()["roots"]) == 2 * 2 * 4  # models x corpora x searches
    assert root_problems(study) == []
    bad = copy.deepcopy(study)
    bad["analysis"]["n_boot"] = 0
    bad["calibration"]["root"]["methods"] = {"future_entropy": [0.1, 0.1]}
    problems = root_problems(bad)
    assert any("analysis.n_boot is 0" in p for p in problems)
    assert any(p.startswith("calibration.root.methods.future_entropy: the starting values") for p in problems)
    assert any("calibration.primary.against: 'ancestral' has no search" in p for p in problems)


def test_a_replicate_moves_along_the_curve_to_its_own_calibrated_point():
    """Where a point lies is uncertain too: each replicate's EntCE is not 0, so its log loss is moved along the
    method's local slope (log loss per nat of EntCE, from the search's steps) to where it would be."""
    from entcal.calibrated_points import local_slope

    steps = pd.DataFrame({"knob": [0.9, 1.1, 1.0], "logloss": [3.0 - 0.05, 3.0 + 0.05, 3.0], "entce": [-0.2, 0.2, 0.0]})
    assert local_slope(steps) == pytest.approx(0.25)  # 0.5 nats of log loss per unit knob / 2 nats of EntCE
    assert np.isnan(local_slope(steps.assign(knob=1.0)))
    rng = np.random.default_rng(2)
    H, L = rng.gamma(2, 1, (10, 5)), rng.gamma(2, 1, (10, 5))
    x, e = [0.9, 1.1], [-0.2, 0.2]
    a = _point("m", "d", "ancestral", None, e, x, H, L, True, ll_steps=[2.95, 3.05])
    study, _, _ = measured_study([a[0]], [a[1]], n_boot=300, seed=0, estimator="mean", primary={})
    r = study.iloc[0]
    assert r.logloss_slope == pytest.approx(0.25)
    assert r.logloss_at_zero == pytest.approx(r.logloss_at_calibration - 0.25 * (H.mean() - L.mean()))
    # the interval of the moved replicates is the percentile interval of L_b - 0.25 (H_b - L_b), by hand
    from entcal.curves import boot_weights
    import zlib

    W = boot_weights(10, 300, zlib.crc32(b"m/d"))
    lb, hb = W @ L.mean(1) / 10, W @ H.mean(1) / 10
    z = lb - 0.25 * (hb - lb)
    assert (r.logloss_ci_low, r.logloss_ci_high) == pytest.approx((np.percentile(z, 2.5), np.percentile(z, 97.5)))
