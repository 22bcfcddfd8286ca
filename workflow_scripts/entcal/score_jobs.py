"""The file job of scoring: a model's log loss and entropy along the human references, at every sampler setting
in one pass -> scores/{dataset}/{model}.parquet (see entcal.score), resumable shard by shard, with its sidecar."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch

from entcal.batches import scoring_batch
from entcal.files import read_sidecar, write_sidecar
from entcal.generate import fixed_batches
from entcal.logs import Progress
from entcal.models import (
    load_model,
)
from entcal.predictor import load_head
from entcal.prompts import length_order, load_prompts
from entcal.sampling import load_calibration
from entcal.score import score_rows, score_settings
from entcal.shards import ShardStore, group_shards, model_fingerprint

log = logging.getLogger(__name__)


def score_file(
    model_dir: str,
    model_name: str,
    prompts_path: str,
    out_path: str,
    *,
    settings: list[dict],
    batch_size,
    dtype: str,
    device: str,
    threads: int = 1,
    epsilon: float = 1e-3,
    calibration: str | None = None,
    head: str | None = None,
    shard_size: int = 512,
    precision: str = "exact",
    gpus: int = 0,
    gpu_memory_gb: float = 80.0,
    meta: dict | None = None,
) -> None:
    """Score one model x dataset at every sampler setting; write Parquet plus JSON sidecar (``meta``: more
    sidecar keys, the dataset for the workflow's jobs).

    ``settings``: dicts with slug, sampler, temperature and (for truncation) param.
    ``calibration`` / ``head``: the train_predictor outputs, for the calibrated samplers.
    Pairs are scored in order of length (``batch_size="auto"``: sequences per pass and vocabulary
    chunk from the memory plan), ``shard_size`` at a time, each shard saved as it finishes (resumable,
    see :mod:`entcal.shards`); rows are written in example order. ``precision``: ``exact`` (weights in
    ``dtype``, bf16 on the paper grid) or ``paper`` (the authors' double-quantised NF4 model with
    ``dtype`` compute; needs bitsandbytes).
    """
    torch.set_num_threads(threads)
    model, tok = load_model(
        model_dir,
        model_name,
        dtype=dtype,
        device=device,
        gpus=gpus,
        gpu_memory_gb=gpu_memory_gb,
        quantization="nf4" if precision == "paper" else "none",
    )
    calib = load_calibration(calibration) if calibration else None
    head_mod = load_head(head, model)[0] if head else None
    chosen = load_prompts(prompts_path)
    chosen = [chosen[i] for i in length_order([p + r for _, p, r in chosen])]
    chunk = 256
    if batch_size == "auto":
        look = calib["candidates"] if calib and any(st["sampler"] == "one_step_lookahead" for st in settings) else 0
        batch_size, chunk = scoring_batch(
            model_dir,
            max(len(p) + len(r) for _, p, r in chosen),
            device=device,
            gpus=gpus,
            gpu_memory_gb=gpu_memory_gb,
            dtype=dtype,
            precision=precision,
            lookahead=look,
        )
    store = ShardStore(
        out_path,
        {
            "model": model_fingerprint(model_dir),
            "settings": settings,
            "epsilon": epsilon,
            "dtype": dtype,
            "precision": precision,
            "calibration": Path(calibration).read_text() if calibration else None,
            "pairs": [(p, r) for _, p, r in chosen],
            "batch_size": batch_size,
        },
    )
    t0, frames = time.time(), []
    groups = group_shards(fixed_batches(len(chosen), batch_size), shard_size)
    progress = Progress(f"score {model_name} ({len(settings)} settings)", len(chosen), unit="references")
    for sl, _ in groups:
        part = chosen[sl]
        ids = [e for e, _, _ in part]
        df = store.load(len(frames), ids)
        if df is None:
            scored = score_settings(
                model,
                [(p, r) for _, p, r in part],
                settings,
                batch_size,
                tok.pad_token_id,
                epsilon,
                chunk=chunk,
                calib=calib,
                head=head_mod,
            )
            df = pd.DataFrame(score_rows(part, scored, settings))
            store.save(len(frames), df, ids)
        frames.append(df)
        progress.update(sl.stop, sum(len(p) + len(r) for _, p, r in chosen[: sl.stop]), force=True)
    seconds = time.time() - t0
    store.merge(frames, sort_by="example_id")
    n_tok = sum(len(p) + len(r) for _, p, r in chosen)
    sidecar = {
        **(meta or {}),
        "model": model_name,
        "upstream": {"prompts": read_sidecar(prompts_path).get("sha256")},  # provenance: the prompts it scored
        "settings": [st["slug"] for st in settings],
        "truncation_epsilon": epsilon,
        "n_prompts": len(chosen),
        "forward_tokens": n_tok,
        "batch_size": batch_size,
        "vocab_chunk": chunk,
        "shards": len(frames),
        "shards_resumed": store.resumed,
        "shards_redone": store.redone,
        "precision": precision,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(n_tok / max(seconds, 1e-9), 1),
        "dtype": dtype,
    }
    log.info("scoring: %s", write_sidecar(out_path, sidecar))
