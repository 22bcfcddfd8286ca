"""Aggregation (per-step means, EntCE and its parts) and the log-log scaling fit."""

import numpy as np
import pandas as pd
import pytest

from entcal.curves import check_token_arrays, curves, ragged_matrix
from entcal.files import IntermediateFileError
from entcal.scaling import fit_loglog, scaling_fits


def test_ragged_matrix_pads_with_nan():
    m = ragged_matrix([[1, 2, 3], [4]], 2)
    assert m.shape == (2, 2) and m[0].tolist() == [1, 2] and m[1, 0] == 4 and np.isnan(m[1, 1])


def _frames(rng, n=50, T=40):
    gen_len = rng.integers(10, T + 1, n)  # some generations end early (eos)
    H = [rng.normal(3.0 + 0.01 * np.arange(k), 0.3) for k in gen_len]
    L = [rng.normal(2.5, 0.4, T) for _ in range(n)]
    F = [rng.normal(2.8, 0.2, T) for _ in range(n)]
    gen = pd.DataFrame({"example_id": range(n), "n_tokens": gen_len, "entropy": H, "stopped_at_eos": gen_len < T})
    ref = pd.DataFrame({"example_id": range(n), "n_tokens": T, "logloss": L, "tf_entropy": F, "n_outside": 0})
    return gen, ref, H, L, F


def test_curves_match_direct_computation():
    rng = np.random.default_rng(0)
    gen, ref, H, L, F = _frames(rng)
    steps, s, pp, _ = curves(gen, ref, max_len=30)
    assert len(steps) == 30 and steps["step"].tolist() == list(range(1, 31))
    for t in (0, 12, 29):  # mean over the generations still running at step t
        alive = [h[t] for h in H if len(h) > t]
        assert steps.loc[t, "entropy_mean"] == pytest.approx(np.mean(alive), abs=1e-12)
        assert steps.loc[t, "entropy_n"] == len(alive)
        assert steps.loc[t, "entropy_se"] == pytest.approx(np.std(alive, ddof=1) / np.sqrt(len(alive)), abs=1e-12)
        assert steps.loc[t, "logloss_mean"] == pytest.approx(np.mean([x[t] for x in L]), abs=1e-12)
    H_bar = np.mean([np.mean([h[t] for h in H if len(h) > t]) for t in range(30)])
    L_bar = np.mean([np.mean([x[t] for x in L]) for t in range(30)])
    F_bar = np.mean([np.mean([x[t] for x in F]) for t in range(30)])
    assert s["entropy_mean"] == pytest.approx(H_bar) and s["logloss_mean"] == pytest.approx(L_bar)
    assert s["entce"] == pytest.approx(H_bar - L_bar)
    assert s["gen_minus_tf"] == pytest.approx(H_bar - F_bar)
    assert s["tf_minus_logloss"] == pytest.approx(F_bar - L_bar)
    assert s["gen_minus_tf"] + s["tf_minus_logloss"] == pytest.approx(s["entce"])
    assert np.isnan(s["entce_se"]) and 0 < s["entce_se_per_prompt"] < 0.2  # no bootstrap, no standard error of it
    assert s["eos_fraction"] == pytest.approx(gen["stopped_at_eos"].mean())
    assert pp["entropy_mean"].tolist() == pytest.approx([np.mean(h[:30]) for h in H])
    assert pp["logloss_mean"].tolist() == pytest.approx([np.mean(x[:30]) for x in L])
    # the authors' notebook: every live token of the first 30 steps weighs the same
    pooled_h = sum(np.sum(h[:30]) for h in H) / sum(min(len(h), 30) for h in H)
    pooled_l = sum(np.sum(x[:30]) for x in L) / (30 * len(L))
    assert s["entropy_pooled"] == pytest.approx(pooled_h) and s["logloss_pooled"] == pytest.approx(pooled_l)
    assert s["entce_pooled"] == pytest.approx(pooled_h - pooled_l)
    # entropy rises with t here, and pooling weighs the early steps more (every generation is alive
    # there), so the pooled estimate is lower than the mean of per-step means
    assert s["entce_pooled"] < s["entce"] - 1e-3
    # the split of the pooled estimate, over the same live tokens, adds up to it
    pooled_f = sum(np.sum(x[:30]) for x in F) / (30 * len(F))
    assert s["tf_entropy_pooled"] == pytest.approx(pooled_f)
    assert s["gen_minus_tf_pooled"] + s["tf_minus_logloss_pooled"] == pytest.approx(s["entce_pooled"])


def test_the_split_and_the_standard_error_follow_the_headline_estimator():
    """Under either analysis.estimator the headline's split adds up to the headline, and its standard error is
    that estimator's: here every prompt is one value a_i at every step and the reference is 0, so both estimators
    are the mean of the a_i, whose standard error is sd(a) / sqrt(n) (the closed form the bootstrap must meet)."""
    from entcal.aggregate import headline_columns
    from entcal.scaling import with_estimator

    rng = np.random.default_rng(1)
    n, T = 400, 12
    a = rng.normal(1.0, 0.5, n)
    gen = pd.DataFrame(
        {"example_id": range(n), "n_tokens": T, "entropy": [np.full(T, x) for x in a], "stopped_at_eos": False}
    )
    ref = pd.DataFrame(
        {
            "example_id": range(n),
            "n_tokens": T,
            "logloss": [np.zeros(T)] * n,
            "tf_entropy": [np.full(T, 0.3)] * n,
            "n_outside": 0,
        }
    )
    _, s, _, boot = curves(gen, ref, max_len=T, n_boot=2000, seed=3)
    closed = np.std(a, ddof=1) / np.sqrt(n)
    assert s["entce"] == pytest.approx(a.mean()) and s["entce_pooled"] == pytest.approx(a.mean())
    assert s["entce_se"] == pytest.approx(closed, rel=0.1) and s["entce_pooled_se"] == pytest.approx(closed, rel=0.1)
    for est in ("mean", "pooled"):
        h = headline_columns(s, est)
        assert h["estimator"] == est and h["entce_headline"] == s["entce" if est == "mean" else "entce_pooled"]
        assert h["gen_minus_tf_headline"] + h["tf_minus_logloss_headline"] == pytest.approx(h["entce_headline"])
        view = with_estimator(pd.DataFrame([s]), est).iloc[0]
        assert view["gen_minus_tf"] + view["tf_minus_logloss"] == pytest.approx(view["entce"])
        assert view["entce_se"] == h["entce_headline_se"]


def test_non_finite_or_short_token_arrays_are_refused_naming_file_row_and_column():
    rng = np.random.default_rng(1)
    gen, ref, *_ = _frames(rng, n=6, T=12)
    check_token_arrays(gen, "g.parquet", ["entropy"])  # as written: passes
    check_token_arrays(ref, "s.parquet", ["logloss", "tf_entropy"])
    gen.at[3, "entropy"] = np.where(np.arange(gen.at[3, "n_tokens"]) == 2, np.nan, gen.at[3, "entropy"])
    with pytest.raises(IntermediateFileError, match=r"g.parquet: row 3 \(example_id 3\): entropy is nan at token 2"):
        check_token_arrays(gen, "g.parquet", ["entropy"])
    gen, ref, *_ = _frames(rng, n=6, T=12)
    gen.at[1, "entropy"] = gen.at[1, "entropy"][:-1]  # a NaN-free array shorter than n_tokens
    with pytest.raises(IntermediateFileError, match=r"row 1 \(example_id 1\): entropy holds \d+ values but n_tokens"):
        check_token_arrays(gen, "g.parquet", ["entropy"])
    # +inf log loss is stated only for tokens outside a truncation's support (truncation_epsilon 0)
    ref.at[0, "logloss"] = np.r_[np.inf, ref.at[0, "logloss"][1:]]
    with pytest.raises(IntermediateFileError, match="logloss is inf at token 0"):
        check_token_arrays(ref, "s.parquet", ["logloss"])
    ref.at[0, "n_outside"] = 1
    check_token_arrays(ref, "s.parquet", ["logloss"])
    with pytest.raises(IntermediateFileError, match="tf_entropy is inf"):
        ref.at[0, "tf_entropy"] = np.r_[np.inf, ref.at[0, "tf_entropy"][1:]]
        check_token_arrays(ref, "s.parquet", ["tf_entropy"])


def test_the_two_estimators_agree_when_no_generation_ends_early():
    rng = np.random.default_rng(3)
    gen, ref, H, L, F = _frames(rng, n=20, T=25)
    gen["entropy"] = [rng.normal(3.0, 0.3, 25) for _ in range(20)]
    gen["n_tokens"], gen["stopped_at_eos"] = 25, False
    _, s, _, _ = curves(gen, ref, max_len=25)
    assert s["entce_pooled"] == pytest.approx(s["entce"], abs=1e-12)


def test_the_estimators_part_on_generations_of_4_2_and_1_tokens():
    """Three prompts whose generations stop after 4, 2 and 1 tokens (entropies 1,2,3,4 / 1,2 / 1) against a
    reference: the per-step means are 1, 2, 3, 4 (mean 2.5), the pooled entropy (1+2+3+4 + 1+2 + 1) / 7 = 2;
    with reference log loss 1 everywhere, EntCE 1.5 and 1."""
    gen = pd.DataFrame(
        {
            "example_id": [0, 1, 2],
            "n_tokens": [4, 2, 1],
            "stopped_at_eos": True,
            "entropy": [np.array([1.0, 2, 3, 4]), np.array([1.0, 2]), np.array([1.0])],
        }
    )
    ref = pd.DataFrame(
        {
            "example_id": [0, 1, 2],
            "n_tokens": 4,
            "n_outside": 0,
            "logloss": [np.ones(4)] * 3,
            "tf_entropy": [np.ones(4)] * 3,
        }
    )
    _, s, _, _ = curves(gen, ref, max_len=4)
    assert s["entce"] == pytest.approx(1.5) and s["entce_pooled"] == pytest.approx(1.0)


def test_reference_start_2_pairs_step_t_with_reference_token_t_plus_1():
    """The authors' compute_ents.py scores reference tokens 2..max_len+1: step t's log loss is token t + 1's."""
    ll = [np.arange(1.0, 7.0), np.arange(11.0, 17.0)]  # reference tokens 1..6
    gen = pd.DataFrame(
        {"example_id": [1, 0], "n_tokens": 5, "stopped_at_eos": False, "entropy": [np.full(5, 2.0), np.full(5, 2.0)]}
    )  # another order than ref
    ref = pd.DataFrame({"example_id": [0, 1], "n_tokens": 6, "n_outside": 0, "logloss": ll, "tf_entropy": ll})
    ours, s1, _, _ = curves(gen, ref, max_len=5)
    theirs, s2, _, _ = curves(gen, ref, max_len=5, reference_start=2)
    assert ours["logloss_mean"].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0]  # tokens 1..5, mean of the two
    assert theirs["logloss_mean"].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]  # tokens 2..6
    assert s2["logloss_mean"] - s1["logloss_mean"] == pytest.approx(1.0) and s2["reference_start"] == 2


def test_fit_recovers_planted_exponent_exactly_without_noise():
    n = np.array([1e8, 4e8, 1.6e9, 7e9, 3e10])
    fit = fit_loglog(n, 3.0 * n**-0.13)
    assert fit["slope"] == pytest.approx(-0.13, abs=1e-10)
    assert fit["intercept"] == pytest.approx(np.log(3.0), abs=1e-8)
    assert fit["r2"] == pytest.approx(1.0) and fit["n"] == 5


def test_fit_ci_covers_planted_exponent_at_nominal_rate():
    rng = np.random.default_rng(1)
    n = np.geomspace(1e8, 1e11, 6)
    hits = 0
    for _ in range(400):
        fit = fit_loglog(n, 2.0 * n**-0.35 * np.exp(rng.normal(0, 0.1, n.size)))
        hits += fit["slope_ci_low"] <= -0.35 <= fit["slope_ci_high"]
    assert 0.91 <= hits / 400 <= 0.99  # 95% t-interval


def test_nonpositive_entce_is_excluded_and_reported():
    summary = pd.DataFrame(
        {
            "model": ["a", "b", "c", "d"],
            "family": "f",
            "dataset": "x",
            "sampler": "ancestral",
            "temperature": 1.0,
            "instruct": False,
            "n_params": [1e6, 1e7, 1e8, 1e9],
            "entce": [0.5, -0.1, 0.3, 0.2],
        }
    )
    fits = scaling_fits(summary)
    row = fits.iloc[0]
    assert row["n"] == 3 and row["n_excluded"] == 1 and row["excluded"] == "b"
    assert row["slope"] == pytest.approx(fit_loglog(np.array([1e6, 1e8, 1e9]), np.array([0.5, 0.3, 0.2]))["slope"])


def _matrices(rng, entce, n_prompts=80, width=12, noise=0.3):
    """Prompt x step entropy and log-loss matrices of one model whose EntCE is ``entce`` (some generations end
    early: NaN after their end)."""
    ref = rng.normal(3.0, noise, (n_prompts, width))
    gen = ref + entce + rng.normal(0, noise, (n_prompts, width))
    ends = rng.integers(width // 2, width + 1, n_prompts)
    gen[np.arange(width)[None, :] >= ends[:, None]] = np.nan
    return gen, ref


def test_bootstrap_replicates_equal_a_direct_resample_in_float64():
    """Each replicate's EntCE, under both estimators, equals the one computed from the resampled rows themselves."""
    from entcal.curves import bootstrap_entce

    rng = np.random.default_rng(3)
    H, L = _matrices(rng, 0.2, n_prompts=30)
    live = np.arange(H.shape[1])
    boot = bootstrap_entce(H, L, live, n_boot=5, seed=11)
    counts = np.random.default_rng(11).multinomial(30, np.full(30, 1 / 30), size=5)
    for b in range(5):
        rows = np.repeat(np.arange(30), counts[b])
        h, l = H[rows], L[rows]
        mean = np.nanmean(np.nanmean(h, axis=0)) - np.nanmean(np.nanmean(l, axis=0))
        pooled = np.nanmean(h) - np.nanmean(l)
        assert boot["mean"][b] == pytest.approx(mean, rel=1e-12) and boot["pooled"][b] == pytest.approx(
            pooled, rel=1e-12
        )


@pytest.mark.parametrize("estimator", ["mean", "pooled"])
def test_bootstrap_ci_over_prompts_covers_the_planted_slope(estimator):
    from entcal.curves import bootstrap_entce
    from entcal.scaling import scaling_fits

    rng = np.random.default_rng(5)
    n_params = np.geomspace(1e6, 1e9, 5)
    hits, runs = 0, 40
    for r in range(runs):
        rows, boots = [], []
        for k, n in enumerate(n_params):
            H, L = _matrices(rng, 2.0 * n**-0.1)
            live = np.arange(H.shape[1])
            rows.append(
                {
                    "model": f"m{k}",
                    "entce": np.nanmean(np.nanmean(H, 0)) - np.nanmean(np.nanmean(L, 0)),
                    "entce_pooled": np.nanmean(H) - np.nanmean(L),
                }
            )
            b = bootstrap_entce(H, L, live, 200, seed=r * 10 + k)
            boots.append(
                pd.DataFrame(
                    {
                        "model": f"m{k}",
                        "dataset": "x",
                        "sampler": "ancestral",
                        "temperature": 1.0,
                        "replicate": np.arange(200),
                        "entce_mean": b["mean"],
                        "entce_pooled": b["pooled"],
                    }
                )
            )
        summary = pd.DataFrame(rows).assign(
            family="f", dataset="x", sampler="ancestral", temperature=1.0, instruct=False, n_params=n_params
        )
        fit = scaling_fits(summary, pd.concat(boots), estimator=estimator).iloc[0]
        assert fit["boot_valid"] == 200 and fit["estimator"] == estimator
        assert (
            fit["slope"] == fit[f"slope_{estimator}"]
            and np.isfinite(fit["slope_mean"])
            and np.isfinite(fit["slope_pooled"])
        )
        hits += fit["slope_boot_ci_low"] <= -0.1 <= fit["slope_boot_ci_high"]
    assert 0.85 <= hits / runs <= 1.0


def test_context_fit_recovers_a_planted_power_law():
    from entcal.scaling import context_fits

    rng = np.random.default_rng(0)
    step = np.arange(1, 400)
    l = 66 + step - 1  # a 66-token prompt as fed (BOS, instruction, window), then the steps before
    se = np.full(step.shape, 0.01)
    ps = pd.DataFrame(
        {
            "model": "m",
            "dataset": "x",
            "sampler": "ancestral",
            "temperature": 1.0,
            "step": step,
            "logloss_mean": 2.0 + 30.0 * l**-0.7 + rng.normal(0, 0.01, step.size),
            "logloss_se": se,
            "logloss_n": 100,
        }
    )
    f = context_fits(ps, {("m", "x"): 66.0}).iloc[0]
    assert f["converged"] and not f["beta_at_bound"] and f["mean_prompt_len"] == 66.0
    assert f["L_inf_ci_low"] <= 2.0 <= f["L_inf_ci_high"] and f["beta_ci_low"] <= 0.7 <= f["beta_ci_high"]
    assert abs(f["beta"] - 0.7) < 0.1
    # counting the context as the configured window only (16 tokens, no BOS or instruction) misplaces every point
    wrong = context_fits(ps, {("m", "x"): 16.0}).iloc[0]
    assert not wrong["beta_ci_low"] <= 0.7 <= wrong["beta_ci_high"]
    # the authors' window (step t is reference token t + 1) sees one token more at every step
    shifted = ps.assign(logloss_mean=2.0 + 30.0 * (l + 1) ** -0.7 + rng.normal(0, 0.01, step.size))
    g = context_fits(shifted, {("m", "x"): 66.0}, reference_start=2).iloc[0]
    assert g["beta_ci_low"] <= 0.7 <= g["beta_ci_high"] and abs(g["beta"] - 0.7) < 0.1


def test_data_scaling_fit_uses_checkpoints_and_excludes_them_from_size_fits():
    from entcal.scaling import data_scaling_fits

    tokens = np.array([1e5, 2e5, 8e5])
    summary = pd.DataFrame(
        {
            "model": ["s3_tok100000", "s3_tok200000", "s3", "s2"],
            "family": "f",
            "dataset": "x",
            "sampler": "ancestral",
            "temperature": 1.0,
            "instruct": False,
            "n_params": [800, 800, 800, 300],
            "entce": list(0.5 * tokens**-0.2) + [0.4],
            "checkpoint_of": ["s3", "s3", None, None],
            "train_tokens": list(tokens) + [8e5],
        }
    )
    d = data_scaling_fits(summary)
    assert d.set_index("model").loc["s3", "slope"] == pytest.approx(-0.2, abs=1e-10)
    assert d.set_index("model").loc["s3", "n"] == 3 and "s2" not in set(d["model"])
    size = scaling_fits(summary)
    assert size.iloc[0]["n"] == 2  # s3 and s2 only: checkpoints are not sizes


def test_split_finished_names_the_first_missing_file_its_rule_and_a_log_only_where_the_job_ran(tmp_path):
    from entcal.aggregate import MISSING_COLUMNS, split_finished

    def job(model, setting, gen=True, sc=True):
        g, s = tmp_path / f"{model}-{setting}.parquet", tmp_path / f"{model}.scores.parquet"
        for p, there in ((g, gen), (s, sc)):
            if there:
                p.write_text("x")
        return {
            "model": model,
            "dataset": "code",
            "setting": setting,
            "sampler": "ancestral",
            "temperature": 1.0,
            "generations": str(g),
            "scores": str(s),
        }

    logs = {
        "generate": str(tmp_path / "gen-{dataset}-{model}-{setting}.log"),
        "score": str(tmp_path / "sc-{dataset}-{model}.log"),
    }
    jobs = [job("a", "t1"), job("b", "t1", gen=False), job("c", "t1", sc=False)]
    (tmp_path / "gen-code-b-t1.log").write_text("Traceback ...")
    done, missing = split_finished(jobs, logs)
    assert [j["model"] for j in done] == ["a"]
    assert list(missing.columns) == MISSING_COLUMNS
    assert missing[["model", "failed_rule"]].values.tolist() == [["b", "generate"], ["c", "score"]]
    assert missing["log"].tolist() == [str(tmp_path / "gen-code-b-t1.log"), ""]  # c's scoring never started
    assert missing["missing_file"].tolist() == [jobs[1]["generations"], jobs[2]["scores"]]
    # a setting beyond the paper is scored by score_extra, whose log is named
    logs["score_extra"] = str(tmp_path / "scx-{dataset}-{model}.log")
    (tmp_path / "scx-code-d.log").write_text("CUDA out of memory")
    _, missing = split_finished([dict(job("d", "top_p0.9-t1", sc=False), part="extra")], logs)
    assert missing[["failed_rule", "log"]].values.tolist() == [["score_extra", str(tmp_path / "scx-code-d.log")]]


def test_fidelity_figures_match_the_closed_form_of_a_linear_log_loss():
    """Reference log loss a + b*t at token t, generations of T steps at entropy c: EntCE over tokens 1..T is
    c - (a + b(T+1)/2); the authors' tokens 2..T (T-1 steps: the reference has T tokens) give c - (a + b(T+2)/2),
    b/2 lower. Pooled equals mean when no generation stops early; smoothing at the run's own 0.1 changes nothing."""
    from entcal.fidelity import setting_rows

    n, T, a, b, c = 5, 40, 2.0, 0.01, 3.0
    gen = pd.DataFrame({"example_id": range(n), "n_tokens": T, "stopped_at_eos": False, "entropy": [np.full(T, c)] * n})
    ll = a + b * np.arange(1, T + 1, dtype=np.float64)
    ref = pd.DataFrame(
        {"example_id": range(n), "n_tokens": T, "n_outside": 0, "logloss": [ll] * n, "tf_entropy": [ll] * n}
    )
    r = setting_rows(gen, ref, max_len=T, smoothing=0.2)
    assert r["entce_mean"] == pytest.approx(c - (a + b * (T + 1) / 2), abs=1e-12)
    assert r["entce_mean_start2"] == pytest.approx(c - (a + b * (T + 2) / 2), abs=1e-12)
    assert r["start2_minus_start1"] == pytest.approx(-b / 2, abs=1e-12)
    assert r["pooled_minus_mean"] == pytest.approx(0.0, abs=1e-12)
    assert r["smooth_gap"] > 0 and setting_rows(gen, ref, max_len=T, smoothing=0.1)["smooth_gap"] == 0.0
    # a linear curve under exponential smoothing lags by b(1-alpha)/alpha in the limit: 0.09 at 0.1, 0.04 at 0.2
    assert r["smooth_gap"] == pytest.approx(b * (9 - 4), rel=0.05)


def test_predictor_variants_give_each_model_its_own_noise_ceiling_and_baselines():
    from entcal.predictor_tables import predictor_variants

    def metrics(r2, ceiling):
        return {
            "n_train": 40,
            "n_test": 10,
            "r2_test": r2,
            "rmse_test": 1.0,
            "r2_constant": -0.01,
            "rmse_constant": 1.2,
            "r2_onestep_linear": 0.1,
            "rmse_onestep_linear": 1.1,
            "noise_ceiling_r2": ceiling,
        }

    with_variants = {
        "model": "a",
        "dataset": "code",
        "metrics": metrics(0.3, 0.6),
        "variants": [
            {"variant": "head", "r2_test": 0.3, "rmse_test": 1.0, "n_train": 40, "n_test": 10},
            {"variant": "small_head", "r2_test": 0.2, "rmse_test": 1.05, "n_train": 40, "n_test": 10},
        ],
    }
    plain = {"model": "b", "dataset": "prose", "metrics": metrics(0.1, 0.4)}
    t = predictor_variants([with_variants, plain])
    assert list(zip(t["model"], t["predictor"])) == [
        ("a", "head"),
        ("a", "small_head"),
        ("a", "constant"),
        ("a", "onestep_linear"),
        ("b", "head"),
        ("b", "constant"),
        ("b", "onestep_linear"),
    ]
    assert t.groupby("model")["noise_ceiling_r2"].agg(set).to_dict() == {"a": {0.6}, "b": {0.4}}
    assert t.loc[(t["model"] == "b") & (t["predictor"] == "head"), "r2_test"].item() == 0.1


def test_the_size_axis_is_counted_or_the_size_in_the_name():
    """Figure 2's x axis: under size_axis nominal the fit runs on the sizes in the models' names (the authors'
    plot), under counted on n_params; scaling_fits.csv says which. A planted exponent on the nominal sizes is
    recovered exactly only on that axis."""
    from entcal.scaling import with_size_axis

    nominal = np.array([1e9, 3e9, 8e9, 70e9])
    counted = np.array([1.24e9, 3.21e9, 8.03e9, 70.6e9])
    entce = 0.5 * nominal**-0.2
    summary = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(4)],
            "family": "llama3",
            "dataset": "d",
            "sampler": "ancestral",
            "temperature": 1.0,
            "instruct": False,
            "n_params": counted,
            "n_params_nominal": nominal,
            "entce": entce,
            "entce_pooled": entce,
        }
    )
    fit_n = scaling_fits(summary, size_axis="nominal").iloc[0]
    fit_c = scaling_fits(summary, size_axis="counted").iloc[0]
    assert fit_n["size_axis"] == "nominal" and fit_c["size_axis"] == "counted"
    assert fit_n["slope"] == pytest.approx(-0.2, abs=1e-9) and abs(fit_c["slope"] + 0.2) > 1e-3
    view = with_size_axis(summary.assign(n_params_nominal=[1e9, np.nan, 8e9, 70e9]), "nominal")
    assert view["n_params"].tolist() == [1e9, 3.21e9, 8e9, 70e9]  # a model without a nominal size keeps its count
