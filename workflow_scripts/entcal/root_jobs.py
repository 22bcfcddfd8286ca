"""The file job of one root search (``calibration_root`` rule): a method's knob moved until EntCE = 0 on real
generations (:mod:`entcal.root_search`), one model x dataset x method x head seed.

Outputs: ``calibration/{dataset}/{model}/root/{search}.parquet``, one row per step (``ROOT_STEP_COLUMNS``, documented
in docs/calibrated-sampling.md), and ``{search}.point.parquet``, the per-prompt token arrays of the calibrated
step (example_id, entropy, logloss: the generation entropies and reference log losses the bootstrap resamples),
each with its sidecar. Every step's generation and scores stay in ``{search}.steps/`` (not declared outputs, so a
killed search resumes from its finished steps); a fingerprint of everything the steps depend on guards the folder,
and a changed model, head, prompts or setting empties it first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from entcal.aggregate import headline_columns
from entcal.curves import curves
from entcal.files import read_parquet, read_sidecar, write_parquet
from entcal.generation_jobs import generate_file
from entcal.root_search import ROOT_STEP_COLUMNS, final_point, search, setting_of
from entcal.score_jobs import score_file
from entcal.shards import model_fingerprint

log = logging.getLogger(__name__)


def _digest(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def _steps_folder(out_path: str, fingerprint: dict) -> Path:
    """The search's step folder, emptied when what its steps were made from changed."""
    folder = Path(out_path).with_suffix(".steps")
    mark = folder / "fingerprint.json"
    blob = json.dumps(fingerprint, sort_keys=True, default=str)
    if folder.exists() and (not mark.exists() or mark.read_text() != blob):
        log.warning("%s: made from other inputs or settings; its steps are redone", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mark.write_text(blob)
    return folder


def root_search_file(
    model_dir: str,
    model_name: str,
    prompts_path: str,
    out_path: str,
    point_out: str,
    *,
    dataset: str,
    method: str,
    head_seed: int | None,
    root: dict,
    analysis: dict,
    generation: dict,
    seed: int,
    dtype: str,
    device: str,
    threads: int = 1,
    epsilon: float = 1e-3,
    head: str | None = None,
    calibration: str | None = None,
    batch_size=16,
    scoring_batch_size=16,
    shard_size: int = 512,
    gpus: int = 0,
    gpu_memory_gb: float = 80.0,
) -> None:
    """Run one search and write its step table and calibrated point. ``root``: the ``calibration.root`` block;
    ``analysis``: max_len, reference_start, estimator (resolved), n_boot; ``generation``: max_new_tokens,
    stop_at_eos. ``head``/``calibration``: the head of seed ``head_seed`` and its JSON (future_entropy only)."""
    start, bounds = root["methods"][method], root["bounds"][method]
    estimator = analysis["estimator"]
    fingerprint = {
        "model": model_fingerprint(model_dir),
        "prompts": _digest(prompts_path),
        "head": _digest(head),
        "calibration": _digest(calibration),
        "method": method,
        "generation": generation,
        "seed": seed,
        "dtype": dtype,
        "epsilon": epsilon,
    }
    folder = _steps_folder(out_path, fingerprint)
    rows, arrays = [], []

    def evaluate(x: float) -> tuple[float, float]:
        """Generate and score at knob ``x`` (or reuse the step's files), and its EntCE under the headline."""
        setting = setting_of(method, x)
        slug = f"step{len(rows)}"
        gen_p, sc_p = folder / f"{slug}.generations.parquet", folder / f"{slug}.scores.parquet"
        t0 = time.time()
        for p in (gen_p, sc_p):  # a step is reused only at the same knob value
            if p.exists() and read_sidecar(p).get("knob") != x:
                p.unlink()
        if not gen_p.exists():
            generate_file(
                model_dir,
                model_name,
                prompts_path,
                str(gen_p),
                sampler=setting["sampler"],
                temperature=setting["temperature"],
                sampler_param=setting["param"],
                max_new_tokens=generation["max_new_tokens"],
                stop_at_eos=generation["stop_at_eos"],
                batch_size=batch_size,
                seed=seed,
                dtype=dtype,
                device=device,
                threads=threads,
                meta={"dataset": dataset, "setting": slug, "knob": x},
                calibration=calibration,
                head=head,
                shard_size=shard_size,
                gpus=gpus,
                gpu_memory_gb=gpu_memory_gb,
            )
        if not sc_p.exists():
            score_file(
                model_dir,
                model_name,
                prompts_path,
                str(sc_p),
                settings=[{**setting, "slug": slug}],
                batch_size=scoring_batch_size,
                dtype=dtype,
                device=device,
                threads=threads,
                epsilon=epsilon,
                calibration=calibration,
                head=head,
                shard_size=shard_size,
                gpus=gpus,
                gpu_memory_gb=gpu_memory_gb,
                meta={"dataset": dataset, "knob": x},
            )
        gen, ref = read_parquet(gen_p), read_parquet(sc_p)
        ref = ref[ref["setting"] == slug]
        job_seed = seed + zlib.crc32(f"{model_name}/{dataset}/{method}/{head_seed}/{x}".encode())
        _, s, _, _ = curves(gen, ref, analysis["max_len"], analysis["reference_start"], analysis["n_boot"], job_seed)
        hl = headline_columns(s, estimator)
        twin = "_mean" if estimator == "mean" else "_pooled"
        arrays.append((gen, ref))
        rows.append(
            {
                "model": model_name,
                "dataset": dataset,
                "method": method,
                "head_seed": head_seed,
                "step": len(rows),
                "knob": x,
                "temperature": setting["temperature"],
                "alpha": setting["param"],
                "entropy": s["entropy" + twin],
                "logloss": s["logloss" + twin],
                "entce": hl["entce_headline"],
                "entce_se": hl["entce_headline_se"],
                "entce_mean": s["entce"],
                "entce_pooled": s["entce_pooled"],
                "estimator": estimator,
                "n_prompts": s["n_prompts"],
                "mean_gen_tokens": s["mean_gen_tokens"],
                "forward_tokens": read_sidecar(gen_p).get("forward_tokens"),
                "seconds": round(time.time() - t0, 2),
            }
        )
        log.info(
            "search %s/%s/%s: step %d at %.6g: EntCE %+.4f (se %.4f)",
            model_name,
            dataset,
            method,
            len(rows) - 1,
            x,
            hl["entce_headline"],
            hl["entce_headline_se"],
        )
        return hl["entce_headline"], hl["entce_headline_se"]

    xs, _, _, decisions = search(
        evaluate,
        start,
        bounds=tuple(bounds),
        tolerance_se=root["tolerance_se"],
        max_steps=root["max_steps"],
    )
    why = decisions[-1]
    for r, d in zip(rows, decisions):
        r["decision"] = d
    steps = pd.DataFrame(rows, columns=ROOT_STEP_COLUMNS)
    point = final_point(steps, root["tolerance_se"])
    gen, ref = arrays[point["index"]]
    gen, ref = gen.sort_values("example_id"), ref.sort_values("example_id")
    side = {
        "model": model_name,
        "dataset": dataset,
        "method": method,
        "head_seed": head_seed,
        "estimator": estimator,
        "stop": why,
        **point,
        "knob": xs[point["index"]],
        "reference_start": analysis["reference_start"],
        "max_len": analysis["max_len"],
    }
    pp = pd.DataFrame(
        {
            "example_id": gen["example_id"].to_numpy(),
            "entropy": [np.asarray(v, np.float64) for v in gen["entropy"]],
            "logloss": [np.asarray(v, np.float64) for v in ref["logloss"]],
        }
    )
    write_parquet(pp, point_out, side)
    write_parquet(steps, out_path, side)
    log.info("search done (%s): %s", why, side)
