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
(:func:`entcal.curves.bootstrap_entce`); ``entce_bootstrap.parquet`` keeps the replicates, which the scaling fits read.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from entcal.curves import check_token_arrays, curves
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
# The benchmark records of a run (Snakemake's benchmark: files) in one table


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
