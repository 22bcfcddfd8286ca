"""Aggregation (per-step means, EntCE and its parts) and the log-log scaling fit."""

import numpy as np
import pandas as pd
import pytest

from entcal.aggregate import check_token_arrays, curves, ragged_matrix
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
    gen = pd.DataFrame({"example_id": range(n), "n_tokens": gen_len, "entropy": H,
                        "stopped_at_eos": gen_len < T})  # fmt: skip
    ref = pd.DataFrame({"example_id": range(n), "n_tokens": T, "logloss": L, "tf_entropy": F, "n_outside": 0})
    return gen, ref, H, L, F


def test_curves_match_direct_computation():
    rng = np.random.default_rng(0)
    gen, ref, H, L, F = _frames(rng)
    steps, s, pp = curves(gen, ref, max_len=30)
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
    assert 0 < s["entce_se"] < 0.2 and s["eos_fraction"] == pytest.approx(gen["stopped_at_eos"].mean())
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
    _, s, _ = curves(gen, ref, max_len=25)
    assert s["entce_pooled"] == pytest.approx(s["entce"], abs=1e-12)


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
    summary = pd.DataFrame({
        "model": ["a", "b", "c", "d"], "family": "f", "dataset": "x", "sampler": "ancestral",
        "temperature": 1.0, "instruct": False, "n_params": [1e6, 1e7, 1e8, 1e9],
        "entce": [0.5, -0.1, 0.3, 0.2],
    })  # fmt: skip
    fits = scaling_fits(summary)
    row = fits.iloc[0]
    assert row["n"] == 3 and row["n_excluded"] == 1 and row["excluded"] == "b"
    assert row["slope"] == pytest.approx(fit_loglog(np.array([1e6, 1e8, 1e9]), np.array([0.5, 0.3, 0.2]))["slope"])


def _prompt_frames(rng, n_params, slope, n_prompts=80, noise=0.3):
    rows = []
    for k, n in enumerate(n_params):
        entce = 2.0 * n**slope
        ref = rng.normal(3.0, noise, n_prompts)
        gen = ref + entce + rng.normal(0, noise, n_prompts)
        rows.append(pd.DataFrame({"model": f"m{k}", "dataset": "x", "sampler": "ancestral", "temperature": 1.0,
                                  "example_id": range(n_prompts), "entropy_mean": gen, "logloss_mean": ref}))  # fmt: skip
    pp = pd.concat(rows, ignore_index=True)
    g = pp.groupby("model", sort=False)
    summary = pd.DataFrame({"model": [f"m{k}" for k in range(len(n_params))], "family": "f", "dataset": "x",
                            "sampler": "ancestral", "temperature": 1.0, "instruct": False, "n_params": n_params,
                            "entce": (g["entropy_mean"].mean() - g["logloss_mean"].mean()).to_numpy()})  # fmt: skip
    return summary, pp


def test_bootstrap_ci_over_prompts_covers_the_planted_slope():
    from entcal.scaling import scaling_fits

    rng = np.random.default_rng(5)
    n_params = np.geomspace(1e6, 1e9, 5)
    hits, runs = 0, 60
    for r in range(runs):
        summary, pp = _prompt_frames(rng, n_params, -0.1)
        fit = scaling_fits(summary, pp, n_boot=300, seed=r).iloc[0]
        assert fit["boot_valid"] == 300
        hits += fit["slope_boot_ci_low"] <= -0.1 <= fit["slope_boot_ci_high"]
    assert 0.85 <= hits / runs <= 1.0


def test_context_fit_recovers_a_planted_power_law():
    from entcal.scaling import context_fits

    rng = np.random.default_rng(0)
    step = np.arange(1, 400)
    l = 64 + step
    se = np.full(step.shape, 0.01)
    ps = pd.DataFrame({"model": "m", "dataset": "x", "sampler": "ancestral", "temperature": 1.0, "step": step,
                       "logloss_mean": 2.0 + 30.0 * l**-0.7 + rng.normal(0, 0.01, step.size),
                       "logloss_se": se, "logloss_n": 100})  # fmt: skip
    f = context_fits(ps, prompt_tokens=64).iloc[0]
    assert f["converged"] and not f["beta_at_bound"]
    assert f["L_inf_ci_low"] <= 2.0 <= f["L_inf_ci_high"] and f["beta_ci_low"] <= 0.7 <= f["beta_ci_high"]
    assert abs(f["beta"] - 0.7) < 0.1


def test_data_scaling_fit_uses_checkpoints_and_excludes_them_from_size_fits():
    from entcal.scaling import data_scaling_fits

    tokens = np.array([1e5, 2e5, 8e5])
    summary = pd.DataFrame({
        "model": ["s3_tok100000", "s3_tok200000", "s3", "s2"], "family": "f", "dataset": "x",
        "sampler": "ancestral", "temperature": 1.0, "instruct": False, "n_params": [800, 800, 800, 300],
        "entce": list(0.5 * tokens**-0.2) + [0.4], "checkpoint_of": ["s3", "s3", None, None],
        "train_tokens": list(tokens) + [8e5],
    })  # fmt: skip
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
        return {"model": model, "dataset": "code", "setting": setting, "sampler": "ancestral", "temperature": 1.0,
                "generations": str(g), "scores": str(s)}  # fmt: skip

    logs = {"generate": str(tmp_path / "gen-{dataset}-{model}-{setting}.log"), "score": str(tmp_path / "sc-{dataset}-{model}.log")}
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
