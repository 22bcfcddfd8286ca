"""Sampling continuations with the entropy of every sampled distribution recorded in the same pass.

The entropy at a step is that of the distribution the token was actually drawn from (after the
temperature and any truncation warper), read off the scores inside ``model.generate`` by a
``LogitsProcessor`` placed last: there is no second forward pass over the generations.

Output of :func:`generate_file` (``generations/{dataset}/{model}/{setting}.parquet``), one row per prompt:

- example_id (int), prompt_len (int: prompt tokens);
- n_tokens (int: generated tokens kept, the eos included when sampled);
- stopped_at_eos (bool);
- token_ids (list[int]), entropy (list[float32], nats), logprob (list[float32]: log-probability of
  the sampled token under the sampled distribution), each of length n_tokens;
- text (str: the decoded generation).

A JSON sidecar (same stem, ``.json``) records the settings, parameter counts and throughput.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import (
    EtaLogitsWarper,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from entcal.files import write_sidecar
from entcal.metrics import logz_entropy, upcast
from entcal.models import input_device
from entcal.prompts import end_token_ids, length_order, load_prompts, pad, trim_at_end
from entcal.shards import ShardStore, group_shards, model_fingerprint

log = logging.getLogger(__name__)


class EntropyRecorder(LogitsProcessor):
    """Records, per step, the entropy of the final scores and the log-probability of the token drawn.

    Must be the last processor: it sees exactly the scores the sampler normalises. It returns
    the scores unchanged. The drawn token of step t is known at step t + 1 (it is the last
    column of ``input_ids``), or from the final sequences for the last step; see :meth:`finish`.
    """

    def __init__(self):
        self.entropy: list[torch.Tensor] = []
        self.logprob: list[torch.Tensor] = []
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._last is not None:
            self.logprob.append(self._logprob(input_ids[:, -1:]))
        x = upcast(scores)
        logz, ent = logz_entropy(x)  # one pass serves the entropy now and the drawn token's logprob next step
        self.entropy.append(ent.float())
        self._last = (x, logz)
        return scores

    def _logprob(self, tokens: torch.Tensor) -> torch.Tensor:
        x, logz = self._last
        return (x.gather(-1, tokens).squeeze(-1).double() - logz).float()

    def finish(self, sequences: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(entropy, logprob), each (B, steps), once generation has returned ``sequences``."""
        if self._last is not None:
            self.logprob.append(self._logprob(sequences[:, -1:]))
            self._last = None
        return torch.stack(self.entropy, 1).cpu(), torch.stack(self.logprob, 1).cpu()


TRUNCATION_WARPERS = {
    "top_p": lambda x: TopPLogitsWarper(top_p=float(x)),
    "top_k": lambda x: TopKLogitsWarper(top_k=int(x)),
    "min_p": lambda x: MinPLogitsWarper(min_p=float(x)),
    "typical": lambda x: TypicalLogitsWarper(mass=float(x)),
    "eta": lambda x: EtaLogitsWarper(epsilon=float(x)),
}
MODEL_SAMPLERS = ("future_entropy", "one_step_lookahead", "mirostat")  # need the model or a predictor: entcal.calibration
SAMPLERS = ["ancestral", *TRUNCATION_WARPERS, *MODEL_SAMPLERS]


def sampling_processors(sampler: str, temperature: float, param: float | None = None) -> list[LogitsProcessor]:
    """transformers warpers of a sampler setting, in generate()'s own order: temperature, then truncation.

    ``sampler``: ``ancestral`` (temperature only) or a truncation rule of :data:`TRUNCATION_WARPERS`
    (top_p, top_k, min_p, typical, eta) with its ``param``. The entropy recorder goes after these.
    For the samplers of :data:`MODEL_SAMPLERS` only the temperature is returned here; their own
    processors (which need the model or a trained predictor) come from
    :func:`entcal.calibration.processor_factory`.
    """
    procs: list[LogitsProcessor] = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    if sampler == "ancestral" or sampler in MODEL_SAMPLERS:
        return procs
    if sampler not in TRUNCATION_WARPERS:
        raise ValueError(f"unknown sampler {sampler!r} (known: {SAMPLERS})")
    if param is None:
        raise ValueError(f"sampler {sampler!r} needs a param")
    return [*procs, TRUNCATION_WARPERS[sampler](param)]


def fixed_batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches of ``batch_size`` (the last one shorter)."""
    return [slice(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]


@torch.inference_mode()
def sample_with_entropy(
    model,
    tok,
    prompts: list[list[int]],
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    stop_at_eos: bool = True,
    sampler: str = "ancestral",
    sampler_param: float | None = None,
    extra_processors=None,
    record: bool = True,
    end_ids: list[int] | None = None,
    batches: list[slice] | None = None,
    prefill_chunk: int = 512,
) -> list[dict]:
    """Sample one continuation per prompt; per step record entropy and the drawn token's logprob.

    ``batches``: slices of ``prompts`` generated together (default: ``batch_size`` at a time); batch
    ``b`` is seeded ``seed + b.start``. ``end_ids``: ids that end a generation (default: the
    tokenizer's eos); the end token is kept. ``extra_processors``: optional function (prompt ids,
    attention mask) -> logits processors for one batch, placed after the sampler's warpers and before
    the entropy recorder. ``record=False`` samples without the recorder (entropy and logprob are then
    None): the token-sampling phase of the two-phase path and the benchmarks' baseline. Prompts longer
    than ``prefill_chunk`` are prefilled that many tokens at a time (bounded activation memory).
    """
    ends = ([tok.eos_token_id] if end_ids is None else list(end_ids)) if stop_at_eos else []
    gen_cfg = GenerationConfig(
        do_sample=True,
        max_new_tokens=max_new_tokens,
        temperature=1.0,  # applied by our own warper list, so the recorder sees the final scores
        top_k=0,
        top_p=1.0,
        min_p=None,
        typical_p=1.0,
        repetition_penalty=1.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=ends or None,
        bos_token_id=tok.bos_token_id,
        prefill_chunk_size=prefill_chunk if max(len(p) for p in prompts) > prefill_chunk else None,
    )
    device = input_device(model)
    results = []
    for sl in batches or fixed_batches(len(prompts), batch_size):
        batch = prompts[sl]
        ids, mask = pad(batch, tok.pad_token_id, side="left")
        ids, mask = ids.to(device), mask.to(device)
        rec = EntropyRecorder()
        extra = extra_processors(ids, mask) if extra_processors else []
        torch.manual_seed(seed + sl.start)
        procs = [*sampling_processors(sampler, temperature, sampler_param), *extra, *([rec] if record else [])]
        seqs = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=gen_cfg,
            logits_processor=LogitsProcessorList(procs),
        )
        new = seqs[:, ids.shape[1] :].cpu()
        ent, lp = rec.finish(seqs) if record else (None, None)
        for i in range(len(batch)):
            toks, stopped = trim_at_end(new[i].tolist(), ends)
            n = len(toks)
            results.append(
                {
                    "prompt_len": len(batch[i]),
                    "n_tokens": n,
                    "stopped_at_eos": stopped,
                    "token_ids": toks,
                    "entropy": ent[i, :n].numpy().astype(np.float32) if record else None,
                    "logprob": lp[i, :n].numpy().astype(np.float32) if record else None,
                }
            )
    return results


GENERATION_COLUMNS = ["example_id", "prompt_len", "n_tokens", "stopped_at_eos", "token_ids", "entropy", "logprob", "text"]


def job_budget(device: str, gpus: int, gpu_memory_gb: float):
    """The memory a job plans with: its GPUs, or on CPU half of the machine's memory as one device."""
    import os

    from entcal.models import resolve_device
    from entcal.plan import GB, Budget

    if resolve_device(device).type == "cuda":
        return Budget(gpus=max(1, gpus), gpu_memory_gb=gpu_memory_gb)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return Budget(gpus=1, gpu_memory_gb=ram / 2, utilization=1.0, overhead_gb=0.5)


def plan_batches(model_dir: str, prompt_lens: list[int], max_new_tokens: int, batch_size, *, device: str, gpus: int,
                 gpu_memory_gb: float, dtype: str, precision: str = "exact", cap: int = 128) -> list[slice]:  # fmt: skip
    """Batches over prompts sorted by length: ``batch_size`` at a time, or with ``"auto"`` as many as
    the memory plan (:mod:`entcal.plan`) fits for each batch's longest prompt."""
    if batch_size != "auto":
        return fixed_batches(len(prompt_lens), int(batch_size))
    from entcal.plan import ModelShape, auto_batch_fn, generation_batches

    shape = ModelShape.from_dir(model_dir)
    budget = job_budget(device, gpus, gpu_memory_gb)
    fits = auto_batch_fn(shape, budget, max_new_tokens, cap=cap, quantization="nf4" if precision == "paper" else "none",
                         dtype=dtype)
    out = generation_batches(prompt_lens, max_new_tokens, fits)
    log.info("memory plan: %d batches of %s prompts (%s, %d GPU(s) of %.0f GB)", len(out),
             sorted({b.stop - b.start for b in out}), shape.model_type, budget.gpus, budget.gpu_memory_gb)  # fmt: skip
    return out


def scoring_batch(model_dir: str, seq_len: int, *, device: str, gpus: int, gpu_memory_gb: float, dtype: str,
                  precision: str = "exact", lookahead: int = 0) -> tuple[int, int]:  # fmt: skip
    """(sequences per teacher-forced pass, vocabulary chunk) from the memory plan."""
    from entcal.plan import ModelShape, plan_scoring

    shape = ModelShape.from_dir(model_dir)
    p = plan_scoring(shape, job_budget(device, gpus, gpu_memory_gb), seq_len, lookahead=lookahead,
                     quantization="nf4" if precision == "paper" else "none", dtype=dtype)  # fmt: skip
    if not p["fits"]:
        raise ValueError(f"{model_dir}: one sequence of {seq_len} tokens does not fit the GPUs for scoring: give the "
                         "model more GPUs (models.<name>.gpus) or set gpu_memory_gb")  # fmt: skip
    log.info("memory plan: scoring %d sequences of up to %d tokens per pass, vocabulary chunk %d", p["batch"], seq_len,
             p["chunk"])  # fmt: skip
    return p["batch"], p["chunk"]


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

    Entropy and logprob of every step come from the sampling pass itself (transformers backend,
    ``precision="exact"``), or from one exact teacher-forced pass over prompt + sampled tokens after
    the sampling (``backend="vllm"``: vLLM samples; ``precision="paper"``: the model samples in
    ``dtype`` and a double-quantised NF4 copy, as the authors ran it, gives the entropies). Shards of
    ``shard_size`` prompts are saved as they finish (:mod:`entcal.shards`): a killed job resumes from
    its last shard. ``calibration`` / ``head``: the train_predictor outputs, needed by the samplers of
    :data:`MODEL_SAMPLERS`.
    """
    from entcal.calibration import forward_tokens_per_step, load_calibration, processor_factory
    from entcal.models import count_params, load_model, load_tokenizer
    from entcal.vllm_backend import choose_backend

    torch.set_num_threads(threads)
    backend = choose_backend(backend, sampler)
    tok = load_tokenizer(model_dir, model_name)
    ends = end_token_ids(tok, model_dir) if stop_at_eos else []
    chosen = load_prompts(prompts_path)
    chosen = [chosen[i] for i in length_order([p for _, p, _ in chosen])]
    prompts = [p for _, p, _ in chosen]
    batches = plan_batches(model_dir, [len(p) for p in prompts], max_new_tokens, batch_size, device=device, gpus=gpus,
                           gpu_memory_gb=gpu_memory_gb, dtype=dtype, precision=precision)  # fmt: skip
    shards = group_shards(batches, shard_size)
    fingerprint = {
        "model": model_fingerprint(model_dir), "sampler": sampler, "param": sampler_param, "temperature": temperature,
        "max_new_tokens": max_new_tokens, "seed": seed, "stop_at_eos": stop_at_eos, "end_ids": ends, "dtype": dtype,
        "calibration": Path(calibration).read_text() if calibration else None, "backend": backend,
        "precision": precision, "prompts": prompts, "batches": [(b.start, b.stop) for b in batches],
    }  # fmt: skip
    store = ShardStore(out_path, fingerprint)
    calib = load_calibration(calibration) if calibration else {}
    if sampler in MODEL_SAMPLERS and not calib:
        raise ValueError(f"sampler {sampler!r} needs the model's calibration file (train_predictor output)")
    t0 = time.time()
    two_phase = backend == "vllm" or precision == "paper"
    pass_batch = batch_size if batch_size != "auto" else scoring_batch(model_dir, max(len(p) for p in prompts) + max_new_tokens,
                                                                       device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb,
                                                                       dtype=dtype, precision=precision)[0]  # fmt: skip
    setting = {"sampler": sampler, "temperature": temperature, "param": sampler_param}
    tokens = {}
    if two_phase:  # phase 1: the sampled tokens of every unfinished shard (kept in their own shards)
        tokens = _sample_tokens(model_dir, model_name, chosen, shards, store, fingerprint, backend=backend, tok=tok,
                                setting=setting, calib=calib, head=head, max_new_tokens=max_new_tokens, seed=seed,
                                stop_at_eos=stop_at_eos, ends=ends, gpus=gpus, dtype=dtype, device=device,
                                gpu_memory_gb=gpu_memory_gb)  # fmt: skip
    model, factory, head_mod = None, None, None
    frames, n_new_run = [], 0
    for k, (sl, shard_batches) in enumerate(shards):
        part = chosen[sl]
        ids = [e for e, _, _ in part]
        df = store.load(k, ids)
        if df is None:
            if model is None:
                model, tok = load_model(model_dir, model_name, dtype=dtype, device=device, gpus=gpus, gpu_memory_gb=gpu_memory_gb,
                                        quantization="nf4" if precision == "paper" else "none")  # fmt: skip
                if calib and two_phase and head:
                    from entcal.calibration import load_head

                    head_mod = load_head(head, model)[0]
                elif calib:
                    factory = processor_factory(sampler, model, calib, head)
            if two_phase:
                rows = _entropy_rows(model, [p for _, p, _ in part], tokens[k], setting, calib, head_mod, ends,
                                     tok.pad_token_id, pass_batch)  # fmt: skip
            else:
                rel = [slice(b.start - sl.start, b.stop - sl.start) for b in shard_batches]
                rows = sample_with_entropy(model, tok, [p for _, p, _ in part], temperature=temperature,
                                           max_new_tokens=max_new_tokens, batch_size=0, seed=seed + sl.start,
                                           stop_at_eos=stop_at_eos, sampler=sampler, sampler_param=sampler_param,
                                           extra_processors=factory, end_ids=ends, batches=rel)  # fmt: skip
            for example_id, row in zip(ids, rows):
                row["example_id"] = example_id
                row["text"] = tok.decode(row["token_ids"], skip_special_tokens=False)
            df = pd.DataFrame(rows)[GENERATION_COLUMNS]
            store.save(k, df, ids)
            n_new_run += int(df["n_tokens"].sum())
        frames.append(df)
    if model is None:  # every shard was resumed: parameter counts still come from the model
        model, _ = load_model(model_dir, model_name, dtype=dtype, device="cpu")
    seconds = time.time() - t0
    df = store.merge(frames, sort_by="example_id")
    shutil.rmtree(str(out_path) + ".tokens.shards", ignore_errors=True)  # the sampling phase's token shards
    n_new = int(df["n_tokens"].sum())
    n_prompt = int(df["prompt_len"].sum())
    lookahead = sampler == "one_step_lookahead"
    sidecar = {
        **(meta or {}),
        "model": model_name,
        "sampler": sampler,
        "sampler_param": sampler_param,
        "temperature": temperature,
        "n_prompts": len(df),
        "max_new_tokens": max_new_tokens,
        "generated_tokens": n_new,
        # model forward tokens: prompts (twice for the lookahead's own cache) + per generated token
        "forward_tokens": n_prompt * (2 if lookahead else 1)
        + n_new * forward_tokens_per_step(sampler, calib.get("candidates", 0)),
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
        "device": str(input_device(model)),
        "backend": backend,
        "precision": precision,
        "dtype": dtype,
        **count_params(model),
    }
    log.info("generation: %s", write_sidecar(out_path, sidecar))


def _entropy_rows(model, prompts, generated, setting, calib, head, ends, pad_id, batch_size) -> list[dict]:
    """Rows of the two-phase path: the exact entropy pass over the sampled tokens."""
    from entcal.vllm_backend import entropy_pass

    rows = entropy_pass(model, prompts, generated, setting, batch_size=batch_size, pad_id=pad_id, calib=calib or None,
                        head=head)  # fmt: skip
    for row in rows:
        row["stopped_at_eos"] = bool(row["token_ids"] and row["token_ids"][-1] in set(ends))
    return rows


def _sample_tokens(model_dir, model_name, chosen, shards, store, fingerprint, *, backend, tok, setting, calib, head,
                   max_new_tokens, seed, stop_at_eos, ends, gpus, dtype, device, gpu_memory_gb) -> dict[int, list[list[int]]]:  # fmt: skip
    """Phase 1 of the two-phase path: sampled token ids of every shard not yet finished, from vLLM or
    from the model in ``dtype`` without the recorder. Token shards are kept (``{output}.tokens.shards``),
    so a job killed during the entropy pass does not sample again."""
    import gc

    from entcal.calibration import processor_factory
    from entcal.models import load_model
    from entcal.vllm_backend import generate_vllm, make_llm

    tok_store = ShardStore(str(store.out) + ".tokens", fingerprint)
    out, engine = {}, None
    for k, (sl, shard_batches) in enumerate(shards):
        ids = [e for e, _, _ in chosen[sl]]
        if store.read(k, ids)[0] is not None:  # finished already (counted in the main loop)
            continue
        df = tok_store.load(k, ids)
        if df is None:
            prompts = [p for _, p, _ in chosen[sl]]
            if backend == "vllm":
                engine = engine or make_llm(model_dir, gpus=gpus, dtype=dtype, seed=seed)
                toks = generate_vllm(engine, prompts, sampler=setting["sampler"], temperature=setting["temperature"],
                                     param=setting["param"], max_new_tokens=max_new_tokens, seed=seed + sl.start,
                                     stop_at_eos=stop_at_eos, end_ids=ends)  # fmt: skip
            else:
                if engine is None:
                    engine, _ = load_model(model_dir, model_name, dtype=dtype, device=device, gpus=gpus,
                                           gpu_memory_gb=gpu_memory_gb)  # fmt: skip
                    factory = processor_factory(setting["sampler"], engine, calib, head) if calib else None
                rel = [slice(b.start - sl.start, b.stop - sl.start) for b in shard_batches]
                rows = sample_with_entropy(engine, tok, prompts, temperature=setting["temperature"],
                                           max_new_tokens=max_new_tokens, batch_size=0, seed=seed + sl.start,
                                           stop_at_eos=stop_at_eos, sampler=setting["sampler"],
                                           sampler_param=setting["param"], extra_processors=factory, record=False,
                                           end_ids=ends, batches=rel)  # fmt: skip
                toks = [r["token_ids"] for r in rows]
            df = pd.DataFrame({"example_id": ids, "token_ids": toks})
            tok_store.save(k, df, ids)
        out[k] = [list(t) for t in df["token_ids"]]
    del engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out
