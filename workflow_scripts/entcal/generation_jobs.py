"""The file job of generation: one model x dataset x sampler setting, from the prompts to
``generations/{dataset}/{model}/{setting}.parquet`` (columns: example_id, prompt_len, n_tokens, stopped_at_eos,
token_ids, entropy, logprob, text; see :mod:`entcal.generate`), resumable shard by shard, with a JSON sidecar of its
settings, counts and throughput. Batches come from the memory plan (:mod:`entcal.batches`) with ``batch_size: auto``;
the backend (transformers or vLLM, :mod:`entcal.vllm_backend`; two phases under ``precision: paper``,
:mod:`entcal.two_phase`) is chosen per job. The prompts' job is :mod:`entcal.prompt_jobs`, the references'
:mod:`entcal.score_jobs`."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from entcal.batches import plan_batches, scoring_batch
from entcal.files import read_sidecar, write_sidecar
from entcal.generate import sample_with_entropy
from entcal.logs import Progress
from entcal.models import (
    model_context,
    count_params,
    count_params_from_config,
    effective_context,
    input_device,
    load_model,
    load_tokenizer,
)
from entcal.predictor import load_head
from entcal.prompts import end_token_ids, length_order, load_prompts
from entcal.runtime import allocator_settings
from entcal.samplers import sampler as registry_entry
from entcal.sampling import calibrated_processors, load_calibration
from entcal.shards import ShardStore, group_shards, model_fingerprint
from entcal.two_phase import entropy_rows, sample_tokens
from entcal.vllm_backend import choose_backend, close_llm, generate_vllm, make_llm, vllm_platform

log = logging.getLogger(__name__)

GENERATION_COLUMNS = [
    "example_id",
    "prompt_len",
    "n_tokens",
    "stopped_at_eos",
    "token_ids",
    "entropy",
    "logprob",
    "text",
]


def cap_at_context(row: dict, prompt_len: int, context: int) -> dict:
    """A generated row cut where prompt + generation reach ``context`` tokens (its token_ids, entropy and logprob;
    n_tokens; stopped_at_eos only if the end token lies within)."""
    keep = max(0, context - prompt_len)
    if row["n_tokens"] <= keep:
        return row
    out = dict(row)
    for k in ("token_ids", "entropy", "logprob"):
        out[k] = list(row[k])[:keep]
    out["n_tokens"], out["stopped_at_eos"] = keep, False  # the end token came after the context, or never
    return out


def generate_file(
    model_dir: str,
    model_name: str,
    prompts_path: str,
    out_path: str,
    *,
    sampler: str,
    temperature: float,
    sampler_param: float | None = None,
    max_new_tokens: int,
    batch_size,
    seed: int,
    stop_at_eos: bool,
    dtype: str,
    device: str,
    threads: int = 1,
    meta: dict | None = None,
    calibration: str | None = None,
    head: str | None = None,
    shard_size: int = 512,
    backend: str = "hf",
    gpus: int = 0,
    precision: str = "exact",
    gpu_memory_gb: float = 80.0,
    stop_at_context: bool = False,
) -> None:
    """Generate for one model x dataset x sampler setting; write Parquet plus JSON sidecar.

    ``stop_at_context`` (``generation.context_rule: authors``): a prompt's generation ends where prompt + generation
    fill the model's own context (config.json max_position_embeddings), as vLLM ended the authors' Pythia runs; the
    tokens past it are never kept (:func:`cap_at_context`).

    Prompts come from the model's prompts file (:func:`entcal.prompt_jobs.select_prompts_file`) and are
    generated in order of length (batches from the memory plan with ``batch_size="auto"``); rows are
    written back in example order. Generation stops at every end id of the model
    (:func:`entcal.prompts.end_token_ids`).

    Entropy and logprob of every step come from the sampling pass itself (the transformers backend's
    recorder, or with ``backend="vllm"`` the recorder inside vLLM's sampler, :mod:`entcal.vllm_backend`),
    or under ``precision="paper"`` from one teacher-forced pass over prompt + sampled tokens after the
    sampling (vLLM or the model in ``dtype`` samples; a double-quantised NF4 copy, as the authors ran it,
    gives the entropies). Shards of
    ``shard_size`` prompts are saved as they finish (:mod:`entcal.shards`): a killed job resumes from
    its last shard. ``calibration`` / ``head``: the train_predictor outputs, needed by the samplers of
    the calibrated samplers.
    """
    torch.set_num_threads(threads)
    backend = choose_backend(backend, sampler, device)
    context = model_context(model_dir) if stop_at_context else None
    tok = load_tokenizer(model_dir, model_name)
    ends = end_token_ids(tok, model_dir) if stop_at_eos else []
    chosen = load_prompts(prompts_path)
    chosen = [chosen[i] for i in length_order([p for _, p, _ in chosen])]
    prompts = [p for _, p, _ in chosen]
    # the sampling batches hold the weights in ``dtype`` whatever the precision: under precision: paper the model
    # samples in dtype and only the entropy pass after it (pass_batch below) runs the NF4 copy
    batches = plan_batches(
        model_dir,
        [len(p) for p in prompts],
        max_new_tokens,
        batch_size,
        device=device,
        gpus=gpus,
        gpu_memory_gb=gpu_memory_gb,
        dtype=dtype,
        precision="exact",
    )
    shards = group_shards(batches, shard_size)
    fingerprint = {
        "model": model_fingerprint(model_dir),
        "sampler": sampler,
        "param": sampler_param,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "stop_at_eos": stop_at_eos,
        "end_ids": ends,
        "dtype": dtype,
        "calibration": Path(calibration).read_text() if calibration else None,
        "backend": backend,
        "precision": precision,
        **({"stop_at_context": context} if context else {}),
        "prompts": prompts,
        "batches": [(b.start, b.stop) for b in batches],
    }
    store = ShardStore(out_path, fingerprint)
    calib = load_calibration(calibration) if calibration else {}
    if registry_entry(sampler).needs_predictor and not calib:
        raise ValueError(f"sampler {sampler!r} needs the model's calibration file (train_predictor output)")
    t0 = time.time()
    two_phase = precision == "paper"  # sample, then the NF4 entropy pass
    same_pass = backend == "vllm" and not two_phase  # vLLM samples and records the entropy itself
    max_seqs = max(b.stop - b.start for b in batches)
    pass_batch = (
        batch_size
        if batch_size != "auto"
        else scoring_batch(
            model_dir,
            max(len(p) for p in prompts) + max_new_tokens,
            device=device,
            gpus=gpus,
            gpu_memory_gb=gpu_memory_gb,
            dtype=dtype,
            precision=precision,
        )[0]
    )
    setting = {"sampler": sampler, "temperature": temperature, "param": sampler_param}
    tokens = {}
    if two_phase:  # phase 1: the sampled tokens of every unfinished shard (kept in their own shards)
        tokens = sample_tokens(
            model_dir,
            model_name,
            chosen,
            shards,
            store,
            fingerprint,
            backend=backend,
            tok=tok,
            setting=setting,
            calib=calib,
            head=head,
            max_new_tokens=max_new_tokens,
            seed=seed,
            stop_at_eos=stop_at_eos,
            ends=ends,
            gpus=gpus,
            dtype=dtype,
            device=device,
            gpu_memory_gb=gpu_memory_gb,
        )
    model, factory, head_mod, engine, engine_seconds = None, None, None, None, None
    frames, n_new_run = [], 0
    todo = sum(sl.stop - sl.start for k, (sl, _) in enumerate(shards) if not store.path(k).exists()) or len(chosen)
    progress = Progress(f"generate {model_name} {sampler} T={temperature}", todo)
    base = [0, 0]  # prompts and tokens of the shards finished in this run
    try:
        for k, (sl, shard_batches) in enumerate(shards):
            part = chosen[sl]
            ids = [e for e, _, _ in part]
            df = store.load(k, ids)
            if df is None:
                if same_pass:
                    if engine is None:  # one engine per job, started where the first shard needs it
                        engine = make_llm(
                            model_dir,
                            gpus=gpus,
                            dtype=dtype,
                            seed=seed,
                            max_num_seqs=max_seqs,
                            max_model_len=effective_context(model_dir, 4096),
                            gpu_memory_gb=gpu_memory_gb,
                        )
                        engine_seconds = engine.entcal_start_seconds
                    rows = generate_vllm(
                        engine,
                        [p for _, p, _ in part],
                        sampler=sampler,
                        temperature=temperature,
                        param=sampler_param,
                        max_new_tokens=max_new_tokens,
                        seed=seed + sl.start,
                        stop_at_eos=stop_at_eos,
                        end_ids=ends,
                    )
                else:
                    if model is None:
                        model, tok = load_model(
                            model_dir,
                            model_name,
                            dtype=dtype,
                            device=device,
                            gpus=gpus,
                            gpu_memory_gb=gpu_memory_gb,
                            quantization="nf4" if precision == "paper" else "none",
                        )
                        head_mod = load_head(head, model)[0] if calib and head else None
                        if calib and not two_phase:
                            factory = calibrated_processors(sampler, model, calib, head_mod, sampler_param)
                    if two_phase:
                        rows = entropy_rows(
                            model,
                            [p for _, p, _ in part],
                            tokens[k],
                            setting,
                            calib,
                            head_mod,
                            ends,
                            tok.pad_token_id,
                            pass_batch,
                        )
                    else:
                        rel = [slice(b.start - sl.start, b.stop - sl.start) for b in shard_batches]
                        rows = sample_with_entropy(
                            model,
                            tok,
                            [p for _, p, _ in part],
                            temperature=temperature,
                            max_new_tokens=max_new_tokens,
                            batch_size=0,
                            seed=seed + sl.start,
                            stop_at_eos=stop_at_eos,
                            sampler=sampler,
                            sampler_param=sampler_param,
                            extra_processors=factory,
                            end_ids=ends,
                            batches=rel,
                            on_step=lambda p, t: progress.update(base[0] + p, base[1] + t),
                        )
                if context:
                    rows = [cap_at_context(row, len(p), context) for row, (_, p, _) in zip(rows, part)]
                for example_id, row in zip(ids, rows):
                    row["example_id"] = example_id
                    row["text"] = tok.decode(row["token_ids"], skip_special_tokens=False)
                df = pd.DataFrame(rows)[GENERATION_COLUMNS]
                store.save(k, df, ids)
                n_new_run += int(df["n_tokens"].sum())
                base[0] += len(ids)
                base[1] += len(ids) * (max_new_tokens if not two_phase else 0)
                progress.update(base[0], base[1], force=True)  # a line per shard
            frames.append(df)
    finally:  # no engine outlives the job, not even a failed one
        close_llm(engine)
        engine = None
    params = count_params(model) if model is not None else count_params_from_config(model_dir)
    seconds = time.time() - t0
    df = store.merge(frames, sort_by="example_id")
    shutil.rmtree(str(out_path) + ".tokens.shards", ignore_errors=True)  # the sampling phase's token shards
    n_new = int(df["n_tokens"].sum())
    n_prompt = int(df["prompt_len"].sum())
    lookahead = sampler == "one_step_lookahead"
    sidecar = {
        **(meta or {}),
        "model": model_name,
        "upstream": {"prompts": read_sidecar(prompts_path).get("sha256")},  # provenance: the prompts it continued
        "sampler": sampler,
        "sampler_param": sampler_param,
        "temperature": temperature,
        "n_prompts": len(df),
        "max_new_tokens": max_new_tokens,
        "stop_at_context": context,  # the model's own context where generation.context_rule is authors, else None
        "generated_tokens": n_new,
        # model forward tokens: prompts (twice for the lookahead's own cache) + per generated token
        "forward_tokens": n_prompt * (2 if lookahead else 1)
        + n_new * registry_entry(sampler).forward_tokens_per_step(calib.get("candidates", 0)),
        "mirostat_target": calib.get("mirostat_target") if sampler == "mirostat" else None,
        "eos_fraction": float(df["stopped_at_eos"].mean()),
        "end_ids": ends,
        "batches": len(batches),
        "batch_sizes": sorted({b.stop - b.start for b in batches}),
        "shards": len(frames),
        "shards_resumed": store.resumed,
        "shards_redone": store.redone,
        "seconds": round(seconds, 2),  # this run only (resumed shards cost nothing)
        "tokens_per_second": round(n_new_run / max(seconds, 1e-9), 1),
        "device": str(input_device(model)) if model is not None else vllm_platform() if same_pass else "cpu",
        "backend": backend,
        "entropy_pass": "nf4 teacher-forced pass" if two_phase else "vllm sampler" if same_pass else "hf sampler",
        "engine_start_seconds": engine_seconds,  # vLLM's start in this run (None: no engine started)
        "precision": precision,
        "dtype": dtype,
        "threads": threads,
        "allocator": allocator_settings(),
        **params,
    }
    log.info("generation: %s", write_sidecar(out_path, sidecar))
