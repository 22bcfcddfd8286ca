"""The file jobs of generation and scoring: one model x dataset (x setting) each, from the files the
workflow passes to the files it writes, resumable shard by shard; the adapters in
``workflow_scripts/`` call these with the rule's inputs, outputs and settings.

- :func:`select_prompts_file` -> ``prompts/{dataset}/{model}.parquet`` (columns: example_id,
  prompt_len, reference_len, prompt_ids, reference_ids);
- :func:`generate_file` -> ``generations/{dataset}/{model}/{setting}.parquet`` (columns: example_id,
  prompt_len, n_tokens, stopped_at_eos, token_ids, entropy, logprob, text; see :mod:`entcal.generate`);
- :func:`score_file` -> ``scores/{dataset}/{model}.parquet`` (see :mod:`entcal.score`).

Each file has a JSON sidecar (same stem) with its settings, counts and throughput. Batches come from
the memory plan (:mod:`entcal.plan`) with ``batch_size: auto``.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from entcal.files import check_file, read_sidecar, write_parquet, write_sidecar
from entcal.logs import Progress
from entcal.generate import fixed_batches, sample_with_entropy
from entcal.memory import GB, Budget, ModelShape, auto_batch_fn, generation_batches, plan_generation, plan_scoring
from entcal.models import (
    count_params,
    count_params_from_config,
    effective_context,
    input_device,
    load_model,
    load_tokenizer,
    model_context,
    resolve_device,
)
from entcal.predictor import load_head
from entcal.prompts import end_token_ids, length_order, load_prompts, select_examples
from entcal.runtime import allocator_settings
from entcal.samplers import sampler as registry_entry
from entcal.sampling import calibrated_processors, load_calibration
from entcal.score import score_rows, score_settings
from entcal.shards import ShardStore, group_shards, model_fingerprint
from entcal.vllm_backend import choose_backend, close_llm, entropy_pass, generate_vllm, make_llm, vllm_platform

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


def job_budget(device: str, gpus: int, gpu_memory_gb: float):
    """The memory a job plans with: its GPUs, or on CPU half of the machine's memory as one device."""
    if resolve_device(device, gpus).type == "cuda":
        return Budget(gpus=max(1, gpus), gpu_memory_gb=gpu_memory_gb)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return Budget(gpus=1, gpu_memory_gb=ram / 2, utilization=1.0, overhead_gb=0.5)


def plan_batches(
    model_dir: str,
    prompt_lens: list[int],
    max_new_tokens: int,
    batch_size,
    *,
    device: str,
    gpus: int,
    gpu_memory_gb: float,
    dtype: str,
    precision: str = "exact",
    cap: int = 128,
) -> list[slice]:
    """Batches over prompts sorted by length: ``batch_size`` at a time, or with ``"auto"`` as many as
    the memory plan (:mod:`entcal.plan`) fits for each batch's longest prompt."""
    if batch_size != "auto":
        return fixed_batches(len(prompt_lens), int(batch_size))
    shape = ModelShape.from_dir(model_dir)
    budget = job_budget(device, gpus, gpu_memory_gb)
    fits = auto_batch_fn(
        shape, budget, max_new_tokens, cap=cap, quantization="nf4" if precision == "paper" else "none", dtype=dtype
    )
    out = generation_batches(prompt_lens, max_new_tokens, fits)
    log.info(
        "memory plan: %d batches of %s prompts (%s, %d GPU(s) of %.0f GB)",
        len(out),
        sorted({b.stop - b.start for b in out}),
        shape.model_type,
        budget.gpus,
        budget.gpu_memory_gb,
    )
    return out


def scoring_batch(
    model_dir: str,
    seq_len: int,
    *,
    device: str,
    gpus: int,
    gpu_memory_gb: float,
    dtype: str,
    precision: str = "exact",
    lookahead: int = 0,
) -> tuple[int, int]:
    """(sequences per teacher-forced pass, vocabulary chunk) from the memory plan."""
    shape = ModelShape.from_dir(model_dir)
    p = plan_scoring(
        shape,
        job_budget(device, gpus, gpu_memory_gb),
        seq_len,
        lookahead=lookahead,
        quantization="nf4" if precision == "paper" else "none",
        dtype=dtype,
    )
    if not p["fits"]:
        raise ValueError(
            f"{model_dir}: one sequence of {seq_len} tokens does not fit the GPUs for scoring: give the "
            "model more GPUs (models.<name>.gpus) or set gpu_memory_gb"
        )
    log.info(
        "memory plan: scoring %d sequences of up to %d tokens per pass, vocabulary chunk %d",
        p["batch"],
        seq_len,
        p["chunk"],
    )
    return p["batch"], p["chunk"]


def job_batch(
    batch_size,
    model_dir: str,
    seq_len: int,
    *,
    device: str,
    gpus: int,
    gpu_memory_gb: float,
    dtype: str,
    new_tokens: int = 0,
    lookahead: int = 0,
) -> int:
    """``batch_size``, or with ``"auto"`` the memory plan's: sequences of ``seq_len`` tokens that fit
    one teacher-forced pass (with the lookahead's cache) and, with ``new_tokens``, a generation."""
    if batch_size != "auto":
        return int(batch_size)
    b = scoring_batch(
        model_dir, seq_len, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb, dtype=dtype, lookahead=lookahead
    )[0]
    if new_tokens:
        g = plan_generation(
            ModelShape.from_dir(model_dir),
            job_budget(device, gpus, gpu_memory_gb),
            seq_len + new_tokens,
            prompt_len=seq_len,
            dtype=dtype,
        )
        b = min(b, max(1, g["batch"]))
    return b


PROMPT_COLUMNS = ["example_id", "prompt_len", "reference_len", "prompt_ids", "reference_ids"]


def select_prompts_file(
    model_dir: str,
    model_name: str,
    examples_path: str,
    out_path: str,
    *,
    prompt_tokens: int,
    max_new_tokens: int,
    min_reference_tokens: int,
    n_prompts: int,
    chat: bool = False,
    max_context: int | None = None,
    text_rules: str = "paper",
    chat_instruction: str | None = None,
) -> None:
    """The prompts of one model x dataset (``prompts/{dataset}/{model}.parquet``), chosen once with the
    model's tokenizer and read by its generation, scoring and predictor jobs: one row per prompt, in
    example order: example_id, prompt_len, reference_len, prompt_ids, reference_ids (the human
    continuation, at most ``max_new_tokens``). A JSON sidecar records the settings and counts."""
    t0 = time.time()
    check_file(examples_path)
    tok = load_tokenizer(model_dir, model_name)
    configured, max_context = max_context, effective_context(model_dir, max_context)
    if max_context != configured:
        log.info(
            "model %s: context %s tokens (its config.json), not the configured %s", model_name, max_context, configured
        )
    chosen = select_examples(
        tok,
        examples_path,
        prompt_tokens,
        max_new_tokens,
        min_reference_tokens,
        n_prompts,
        chat,
        max_context,
        text_rules,
        chat_instruction,
    )
    df = pd.DataFrame(
        {
            "example_id": [e for e, _, _ in chosen],
            "prompt_len": [len(p) for _, p, _ in chosen],
            "reference_len": [len(r) for _, _, r in chosen],
            "prompt_ids": [p for _, p, _ in chosen],
            "reference_ids": [r for _, _, r in chosen],
        }
    )[PROMPT_COLUMNS]
    side = {
        "model": model_name,
        "n_prompts": len(df),
        "requested": n_prompts,
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": max_new_tokens,
        "min_reference_tokens": min_reference_tokens,
        "max_context": max_context,
        "max_context_configured": configured,
        "model_context": model_context(model_dir),
        "chat": chat,
        "chat_instruction": chat_instruction if chat else None,
        "text_rules": text_rules,
        "mean_prompt_len": float(df["prompt_len"].mean()),
        "max_prompt_len": int(df["prompt_len"].max()),
        "seconds": round(time.time() - t0, 2),
    }
    log.info("prompts: %s", write_parquet(df, out_path, side))


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
) -> None:
    """Generate for one model x dataset x sampler setting; write Parquet plus JSON sidecar.

    Prompts come from the model's prompts file (:func:`entcal.prompts.select_prompts_file`) and are
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
        tokens = _sample_tokens(
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
                        rows = _entropy_rows(
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


def _entropy_rows(model, prompts, generated, setting, calib, head, ends, pad_id, batch_size) -> list[dict]:
    """Rows of the two-phase path: the exact entropy pass over the sampled tokens."""
    rows = entropy_pass(
        model, prompts, generated, setting, batch_size=batch_size, pad_id=pad_id, calib=calib or None, head=head
    )
    for row in rows:
        row["stopped_at_eos"] = bool(row["token_ids"] and row["token_ids"][-1] in set(ends))
    return rows


def _sample_tokens(
    model_dir,
    model_name,
    chosen,
    shards,
    store,
    fingerprint,
    *,
    backend,
    tok,
    setting,
    calib,
    head,
    max_new_tokens,
    seed,
    stop_at_eos,
    ends,
    gpus,
    dtype,
    device,
    gpu_memory_gb,
) -> dict[int, list[list[int]]]:
    """Phase 1 of the two-phase path: sampled token ids of every shard not yet finished, from vLLM or
    from the model in ``dtype`` without the recorder. Token shards are kept (``{output}.tokens.shards``),
    so a job killed during the entropy pass does not sample again."""
    tok_store = ShardStore(str(store.out) + ".tokens", fingerprint)
    out, engine, llm = {}, None, None
    try:
        for k, (sl, shard_batches) in enumerate(shards):
            ids = [e for e, _, _ in chosen[sl]]
            if store.read(k, ids)[0] is not None:  # finished already (counted in the main loop)
                continue
            df = tok_store.load(k, ids)
            if df is None:
                prompts = [p for _, p, _ in chosen[sl]]
                if backend == "vllm":
                    llm = llm or make_llm(
                        model_dir,
                        gpus=gpus,
                        dtype=dtype,
                        seed=seed,
                        record=False,
                        max_num_seqs=max(b.stop - b.start for _, bs in shards for b in bs),
                        max_model_len=effective_context(model_dir, 4096),
                        gpu_memory_gb=gpu_memory_gb,
                    )
                    rows = generate_vllm(
                        llm,
                        prompts,
                        sampler=setting["sampler"],
                        temperature=setting["temperature"],
                        param=setting["param"],
                        max_new_tokens=max_new_tokens,
                        seed=seed + sl.start,
                        stop_at_eos=stop_at_eos,
                        end_ids=ends,
                        record=False,
                    )
                else:
                    if engine is None:
                        engine, _ = load_model(
                            model_dir, model_name, dtype=dtype, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb
                        )
                        head_mod = load_head(head, engine)[0] if calib and head else None
                        factory = (
                            calibrated_processors(setting["sampler"], engine, calib, head_mod, setting["param"])
                            if calib
                            else None
                        )
                    rel = [slice(b.start - sl.start, b.stop - sl.start) for b in shard_batches]
                    rows = sample_with_entropy(
                        engine,
                        tok,
                        prompts,
                        temperature=setting["temperature"],
                        max_new_tokens=max_new_tokens,
                        batch_size=0,
                        seed=seed + sl.start,
                        stop_at_eos=stop_at_eos,
                        sampler=setting["sampler"],
                        sampler_param=setting["param"],
                        extra_processors=factory,
                        record=False,
                        end_ids=ends,
                        batches=rel,
                    )
                df = pd.DataFrame({"example_id": ids, "token_ids": [r["token_ids"] for r in rows]})
                tok_store.save(k, df, ids)
            out[k] = [list(t) for t in df["token_ids"]]
    finally:  # the NF4 pass's model comes next: neither the engine nor the sampling model stays
        close_llm(llm)
        del engine, llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


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
