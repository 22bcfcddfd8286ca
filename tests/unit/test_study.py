"""The calibrated point of each method (EntCE = 0 by interpolation) and its bootstrap intervals."""

import numpy as np
import pandas as pd
import pytest

from entcal.study import SETTING_COLUMNS, answer, calibration_study, crossing, setting_answer, setting_comparison


def test_crossing_is_the_intersection_of_the_segment_with_the_diagonal():
    # (1, 2) -> (3, 2.5): EntCE -1 then +0.5; the segment meets H = L at t = 2/3: H* = L* = 7/3
    h, ll, i = crossing(np.array([3.0, 1.0, 0.5]), np.array([2.5, 2.0, 2.2]))
    assert h == pytest.approx(7 / 3) and ll == pytest.approx(7 / 3) and i == 1
    assert np.isnan(crossing(np.array([1.0, 2.0]), np.array([3.0, 4.0]))[1])  # EntCE < 0 throughout
    assert crossing(np.array([2.0, 1.0]), np.array([2.0, 3.0]))[:2] == (2.0, 2.0)  # a setting exactly calibrated


def _per_prompt(points: dict, n: int, noise: float, seed: int = 0) -> pd.DataFrame:
    """Per-prompt means around given (H, L) points: {method: [(setting, H, L), ...]}; the noise is a
    per-prompt offset shared by every setting (prompts differ in difficulty) plus independent jitter."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, noise, n)
    rows = []
    for method, pts in points.items():
        for setting, h, ll in pts:
            jit = rng.normal(0, noise / 4, (2, n))
            jit -= jit.mean(1, keepdims=True)  # the sample means are exactly (H, L)
            for e in range(n):
                rows.append(
                    {
                        "model": "m",
                        "dataset": "d",
                        "sampler": method,
                        "setting": setting,
                        "example_id": e,
                        "entropy_mean": h + jit[0, e],
                        "logloss_mean": ll + shared[e] - shared.mean() + jit[1, e],
                    }
                )
    return pd.DataFrame(rows)


def test_the_method_with_lower_log_loss_at_calibration_wins_by_the_closed_form_margin():
    temps = [("ancestral-t1.1", 3.2, 3.0), ("ancestral-t1", 2.8, 3.05), ("ancestral-t0.9", 2.2, 3.2)]
    # the tilt reaches the same entropies 0.03 nats cheaper in log loss
    tilt = [("future_entropy0.2-t1", 3.2, 2.97), ("future_entropy-t1", 2.6, 3.02)]
    pp = _per_prompt({"ancestral": temps, "future_entropy": tilt}, n=64, noise=0.3)
    summary = pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "sampler": ["ancestral"] * 3 + ["future_entropy"] * 2,
            "gen_forward_tokens": [100.0] * 3 + [250.0] * 2,
            "mean_gen_tokens": 10.0,
            "n_prompts": 10,
        }
    )
    t = calibration_study(pp, summary, n_boot=400, seed=0).set_index("method")
    # temperature: between t1.1 (EntCE +0.2) and t1 (-0.25): t = 0.2/0.45
    w = 0.2 / 0.45
    h_t, l_t = 3.2 + w * (2.8 - 3.2), 3.0 + w * (3.05 - 3.0)
    assert t.loc["ancestral", "logloss_at_calibration"] == pytest.approx(l_t, abs=1e-9)
    assert t.loc["ancestral", "entropy_at_calibration"] == pytest.approx(h_t, abs=1e-9) == pytest.approx(l_t)
    w2 = 0.23 / (0.23 + 0.42)
    l_f = 2.97 + w2 * (3.02 - 2.97)
    assert t.loc["future_entropy", "logloss_at_calibration"] == pytest.approx(l_f, abs=1e-9)
    assert t.loc["future_entropy", "delta_vs_temperature"] == pytest.approx(l_f - l_t, abs=1e-9)
    assert (
        t.loc["ancestral", "setting_below"] == "ancestral-t1"
        and t.loc["ancestral", "setting_above"] == "ancestral-t1.1"
    )
    assert t.loc["future_entropy", "forward_tokens_per_generated_token"] == pytest.approx(2.5)
    # the shared per-prompt difficulty cancels in the paired difference: its interval is far narrower
    lo, hi = t.loc["future_entropy", ["delta_ci_low", "delta_ci_high"]]
    llo, lhi = t.loc["future_entropy", ["logloss_ci_low", "logloss_ci_high"]]
    assert lo < l_f - l_t < hi < 0 and (hi - lo) < (lhi - llo) / 2
    assert t.loc["ancestral", "delta_ci_low"] == t.loc["ancestral", "delta_ci_high"] == 0.0
    assert "future_entropy" in answer(t.reset_index())[0]


def test_intervals_cover_the_truth_at_about_their_level():
    """Prompts drawn from a population whose calibrated point is known: the 90 % interval of L* covers it
    in roughly 90 % of repeated studies."""
    temps_true = [("a-t1.2", 3.4, 3.0), ("a-t1", 2.8, 3.1)]
    truth = 3.0 + (0.4 / 0.7) * 0.1
    covered = 0
    for rep in range(60):
        rng = np.random.default_rng(100 + rep)
        n = 40
        shared = rng.normal(0, 0.5, n)
        rows = []
        for setting, h, ll in temps_true:
            for e in range(n):
                rows.append(
                    {
                        "model": "m",
                        "dataset": "d",
                        "sampler": "ancestral",
                        "setting": setting,
                        "example_id": e,
                        "entropy_mean": h + 0.2 * shared[e],
                        "logloss_mean": ll + shared[e],
                    }
                )
        t = calibration_study(pd.DataFrame(rows), pd.DataFrame(), n_boot=200, seed=rep, level=0.9)
        covered += bool(t["logloss_ci_low"][0] <= truth <= t["logloss_ci_high"][0])
    assert 0.75 <= covered / 60 <= 0.99


def test_each_setting_against_temperature_at_its_own_entropy():
    """A one-setting method has no calibrated point; its row compares it with temperature's curve at its own
    entropy: closed-form interpolation, a paired interval that excludes 0 when the margin is real and far
    narrower than the log loss's own, no comparison outside temperature's range, and the setting's own cost."""
    temps = [("ancestral-t1.1", 3.2, 3.0), ("ancestral-t1", 2.8, 3.05), ("ancestral-t0.9", 2.2, 3.2)]
    pts = {
        "ancestral": temps,
        "one_step_lookahead": [("one_step_lookahead-t1", 3.0, 2.995)],
        "mirostat": [("mirostat-t1", 4.0, 3.1)],
        "top_p": [("top_p-t1", 3.203, 3.0)],
    }
    pp = _per_prompt(pts, n=64, noise=0.3)
    pp["temperature"] = 1.0
    pp["sampler_param"] = np.nan
    summary = pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "sampler": ["ancestral", "one_step_lookahead", "mirostat", "top_p"],
            "temperature": 1.0,
            "sampler_param": np.nan,
            "gen_forward_tokens": [100.0, 600.0, 100.0, 100.0],
            "mean_gen_tokens": 10.0,
            "n_prompts": 10,
        }
    )
    t = setting_comparison(pp, summary, n_boot=400, seed=0).set_index("setting")
    assert list(t.reset_index().columns) == ["setting", *[c for c in SETTING_COLUMNS if c != "setting"]]
    la = t.loc["one_step_lookahead-t1"]
    t_at = 3.05 + (3.0 - 2.8) / (3.2 - 2.8) * (3.0 - 3.05)  # H = 3.0: halfway from t1 (2.8) to t1.1 (3.2)
    assert la["temperature_logloss_at_entropy"] == pytest.approx(t_at, abs=1e-9)
    assert la["delta_vs_temperature_at_entropy"] == pytest.approx(2.995 - 3.025, abs=1e-9)
    assert la["entce"] == pytest.approx(0.005, abs=1e-9) and la["forward_tokens_per_generated_token"] == pytest.approx(
        6.0
    )
    assert la["delta_ci_low"] < -0.03 < la["delta_ci_high"] < 0
    assert la["delta_ci_high"] - la["delta_ci_low"] < (la["logloss_ci_high"] - la["logloss_ci_low"]) / 2
    assert la["entce_ci_low"] < 0.005 < la["entce_ci_high"]
    mi = t.loc["mirostat-t1"]
    assert np.isnan(mi["temperature_logloss_at_entropy"]) and mi["delta_boot_inside"] == 0.0  # H = 4 > 3.2
    assert np.isnan(mi["delta_ci_low"]) and np.isnan(mi["delta_ci_high"])
    tp = t.loc["top_p-t1"]  # just past temperature's highest entropy: some replicates fall inside, but no point
    assert np.isnan(tp["delta_vs_temperature_at_entropy"]) and 0 < tp["delta_boot_inside"] < 1
    assert np.isnan(tp["delta_ci_low"]) and np.isnan(tp["delta_ci_high"])
    assert t.loc["ancestral-t1", "delta_vs_temperature_at_entropy"] == pytest.approx(0.0, abs=1e-12)
    lines = setting_answer(t.reset_index())
    assert len(lines) == 3 and "-0.0300 nats against temperature" in lines[1] and "outside" in lines[0]


def test_no_interval_for_a_method_that_never_reaches_calibration():
    """A method whose settings all lie on one side of EntCE = 0 has no calibrated point, and so no interval, even
    where some bootstrap replicates happen to cross (they did for a real row: 16 % of them)."""
    temps = [("ancestral-t1.1", 3.2, 3.0), ("ancestral-t1", 2.8, 3.05)]
    near = [("mirostat-t1", 3.08, 3.0), ("mirostat0.5-t1", 3.3, 3.25)]  # EntCE +0.08 and +0.05: never 0
    pp = _per_prompt({"ancestral": temps, "mirostat": near}, n=16, noise=0.8)
    summary = pd.DataFrame(
        {
            "model": "m",
            "dataset": "d",
            "sampler": ["ancestral"] * 2 + ["mirostat"] * 2,
            "gen_forward_tokens": 100.0,
            "mean_gen_tokens": 10.0,
            "n_prompts": 16,
        }
    )
    t = calibration_study(pp, summary, n_boot=400, seed=1).set_index("method")
    row = t.loc["mirostat"]
    assert not row["crosses"] and np.isnan(row["logloss_at_calibration"])
    assert np.isnan(row[["logloss_ci_low", "logloss_ci_high", "delta_ci_low", "delta_ci_high"]].astype(float)).all()
    assert t.loc["ancestral", "crosses"] and np.isfinite(t.loc["ancestral", "logloss_ci_low"])
