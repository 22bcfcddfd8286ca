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

import json
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

from entcal.metrics import logz_entropy
from entcal.shards import ShardStore, model_fingerprint, shard_slices

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
        x = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
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


def prefix_ids(tok, prefix: str = "", instruction: str = "", chat: bool = False) -> list[int]:
    """Tokens put before an example's window.

    With an ``instruction`` (WritingPrompts, CodeContests): the model's chat template with the
    instruction as the user turn and the generation prompt opened (``chat``: instruct models; the
    window then starts the assistant turn), else the paper's plain format ``Q: {instruction}\nA: ``
    after the tokenizer's special tokens. Without one: ``prefix`` with the special tokens, or just
    the special tokens (BOS for Llama-style tokenizers).
    """
    if instruction:
        if chat:
            if not getattr(tok, "chat_template", None):
                raise ValueError(f"an instruct model's tokenizer ({getattr(tok, 'name_or_path', '?')}) has no chat template")
            text = tok.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True,
                                           tokenize=False)  # fmt: skip
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(f"{prefix}Q: {instruction}\nA: ", add_special_tokens=True)["input_ids"])
    return list(tok(prefix, add_special_tokens=True)["input_ids"]) if prefix else _specials(tok)


def select_examples(tok, examples: pd.DataFrame, prompt_tokens: int, ref_tokens: int, min_ref_tokens: int, n: int,
                    chat: bool = False, max_context: int | None = None):  # fmt: skip
    """The first ``n`` examples whose window holds ``prompt_tokens + min_ref_tokens`` tokens.

    Returns a list of (example_id, prompt_ids, reference_ids): prompt = :func:`prefix_ids` (the
    tokenizer's special tokens, and the instruction where the example has one; ``chat`` for
    instruct models) + the window's first ``prompt_tokens`` tokens; reference = the next tokens of
    the window, at most ``ref_tokens``. With ``max_context``, examples whose prompt plus
    ``ref_tokens`` would not fit are skipped (long CodeContests statements). Generation and scoring
    call this with the same arguments, so they see the same prompts.
    """
    out, too_long = [], 0
    for r in examples.itertuples():
        body = tok(r.text, add_special_tokens=False)["input_ids"]
        if len(body) < prompt_tokens + min_ref_tokens:
            continue
        pre = prefix_ids(tok, r.prefix, getattr(r, "instruction", ""), chat)
        if max_context and len(pre) + prompt_tokens + ref_tokens > max_context:
            too_long += 1
            continue
        out.append((int(r.example_id), pre + body[:prompt_tokens], body[prompt_tokens : prompt_tokens + ref_tokens]))
        if len(out) == n:
            break
    if too_long:
        log.info("skipped %d examples whose prompt + %d tokens exceed the %d-token context", too_long, ref_tokens, max_context)
    if len(out) < n:
        log.warning("only %d of %d requested examples are long enough", len(out), n)
    if not out:
        raise ValueError(f"no example holds {prompt_tokens}+{min_ref_tokens} tokens")
    return out


def _specials(tok) -> list[int]:
    """The special tokens the tokenizer puts before text (BOS for Llama-style tokenizers)."""
    ids = tok("", add_special_tokens=True)["input_ids"]
    return list(ids)


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask) for a batch of prompts of different lengths."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return ids, mask


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
) -> list[dict]:
    """Sample one continuation per prompt; per step record entropy and the drawn token's logprob.

    ``extra_processors``: optional function (prompt ids, attention mask) -> logits processors for
    one batch, placed after the sampler's warpers and before the entropy recorder.
    ``record=False`` samples without the recorder (entropy and logprob are then None): the
    "generate, then score in a second pass" baseline of the benchmarks.
    """
    eos = tok.eos_token_id
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
        eos_token_id=eos if stop_at_eos else None,
        bos_token_id=tok.bos_token_id,
    )
    device = next(model.parameters()).device
    results = []
    for b in range(0, len(prompts), batch_size):
        batch = prompts[b : b + batch_size]
        ids, mask = left_pad(batch, tok.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        rec = EntropyRecorder()
        extra = extra_processors(ids, mask) if extra_processors else []
        torch.manual_seed(seed + b)
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
            toks = new[i].tolist()
            n = len(toks)
            stopped = False
            if stop_at_eos and eos in toks:
                n = toks.index(eos) + 1
                stopped = True
            results.append(
                {
                    "prompt_len": len(batch[i]),
                    "n_tokens": n,
                    "stopped_at_eos": stopped,
                    "token_ids": toks[:n],
                    "entropy": ent[i, :n].numpy().astype(np.float32) if record else None,
                    "logprob": lp[i, :n].numpy().astype(np.float32) if record else None,
                }
            )
    return results


def generate_file(
    model_dir: str,
    model_name: str,
    examples_path: str,
    out_path: str,
    *,
    sampler: str,
    temperature: float,
    sampler_param: float | None = None,
    prompt_tokens: int,
    max_new_tokens: int,
    min_reference_tokens: int,
    n_prompts: int,
    batch_size: int,
    seed: int,
    stop_at_eos: bool,
    dtype: str,
    device: str,
    threads: int = 1,
    meta: dict | None = None,
    calibration: str | None = None,
    head: str | None = None,
    chat: bool = False,
    shard_size: int = 512,
    backend: str = "hf",
    gpus: int = 0,
    max_context: int | None = None,
) -> None:
    """Generate for one model x dataset x sampler setting; write Parquet plus JSON sidecar.

    ``calibration`` / ``head``: the train_predictor outputs (JSON, safetensors), needed by the
    samplers of :data:`MODEL_SAMPLERS`. The prompts are generated ``shard_size`` at a time, each
    shard saved as it finishes (:mod:`entcal.shards`): a killed job resumes from its last shard.
    ``backend``: ``hf`` (transformers, entropy recorded inside the sampling loop), ``vllm`` (vLLM
    sampling, tensor-parallel over ``gpus``, then the exact entropy pass of
    :mod:`entcal.vllm_backend`) or ``auto`` (vLLM where usable).
    """
    from entcal.calibration import forward_tokens_per_step, load_calibration, processor_factory
    from entcal.models import count_params, load_model, load_tokenizer
    from entcal.vllm_backend import choose_backend

    torch.set_num_threads(threads)
    backend = choose_backend(backend, sampler)
    tok = load_tokenizer(model_dir, model_name)
    examples = pd.read_parquet(examples_path)
    chosen = select_examples(tok, examples, prompt_tokens, max_new_tokens, min_reference_tokens, n_prompts, chat,
                             max_context)  # fmt: skip
    fingerprint = {
        "model": model_fingerprint(model_dir), "sampler": sampler, "param": sampler_param, "temperature": temperature,
        "max_new_tokens": max_new_tokens, "seed": seed, "stop_at_eos": stop_at_eos, "dtype": dtype,
        "calibration": Path(calibration).read_text() if calibration else None, "backend": backend,
        "prompts": [p for _, p, _ in chosen],
    }  # fmt: skip
    store = ShardStore(out_path, fingerprint)
    slices = shard_slices(len(chosen), shard_size, batch_size)
    t0 = time.time()
    tokens = {}
    if backend == "vllm":  # phase 1: sample every missing shard with vLLM, then free the GPU for the entropy pass
        tokens = _vllm_phase(model_dir, chosen, slices, store, fingerprint, sampler=sampler, temperature=temperature,
                             param=sampler_param, max_new_tokens=max_new_tokens, seed=seed, stop_at_eos=stop_at_eos,
                             eos_id=tok.eos_token_id, gpus=gpus, dtype=dtype)  # fmt: skip
    model = None
    factory, calib = None, {}
    if sampler in MODEL_SAMPLERS:
        if not calibration:
            raise ValueError(f"sampler {sampler!r} needs the model's calibration file (train_predictor output)")
        calib = load_calibration(calibration)
    frames, n_new_run = [], 0
    for k, sl in enumerate(slices):
        part = chosen[sl]
        ids = [e for e, _, _ in part]
        df = store.load(k, ids)
        if df is None:
            if model is None:
                model, tok = load_model(model_dir, model_name, dtype=dtype, device=device)
                if calib:
                    factory = processor_factory(sampler, model, calib, head)
            prompts = [p for _, p, _ in part]
            if backend == "vllm":
                from entcal.vllm_backend import entropy_pass

                setting = {"sampler": sampler, "temperature": temperature, "param": sampler_param}
                rows = entropy_pass(model, prompts, tokens[k], setting, batch_size, tok.pad_token_id)
                for row in rows:
                    row["stopped_at_eos"] = bool(stop_at_eos and row["token_ids"] and row["token_ids"][-1] == tok.eos_token_id)
            else:
                rows = sample_with_entropy(
                    model,
                    tok,
                    prompts,
                    temperature=temperature,
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    seed=seed + sl.start,  # = seed + the batch's offset in the whole job: shard-independent
                    stop_at_eos=stop_at_eos,
                    sampler=sampler,
                    sampler_param=sampler_param,
                    extra_processors=factory,
                )
            for example_id, row in zip(ids, rows):
                row["example_id"] = example_id
                row["text"] = tok.decode(row["token_ids"], skip_special_tokens=False)
            df = pd.DataFrame(rows)[
                ["example_id", "prompt_len", "n_tokens", "stopped_at_eos", "token_ids", "entropy", "logprob", "text"]
            ]
            store.save(k, df, ids)
            n_new_run += int(df["n_tokens"].sum())
        frames.append(df)
    if model is None:  # every shard was resumed: parameter counts still come from the model
        model, _ = load_model(model_dir, model_name, dtype=dtype, device="cpu")
    seconds = time.time() - t0
    df = store.merge(frames)
    shutil.rmtree(str(out_path) + ".tokens.shards", ignore_errors=True)  # the vLLM backend's token shards
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
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": max_new_tokens,
        "generated_tokens": n_new,
        # model forward tokens: prompts (twice for the lookahead's own cache) + per generated token
        "forward_tokens": n_prompt * (2 if lookahead else 1)
        + n_new * forward_tokens_per_step(sampler, calib.get("candidates", 0)),
        "mirostat_target": calib.get("mirostat_target") if sampler == "mirostat" else None,
        "eos_fraction": float(df["stopped_at_eos"].mean()),
        "shards": len(frames),
        "shards_resumed": store.resumed,
        "shards_redone": store.redone,
        "seconds": round(seconds, 2),  # this run only (resumed shards cost nothing)
        "tokens_per_second": round(n_new_run / max(seconds, 1e-9), 1),
        "device": str(next(model.parameters()).device),
        "backend": backend,
        "dtype": dtype,
        **count_params(model),
    }
    Path(out_path).with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    log.info("generation: %s", sidecar)


def _vllm_phase(model_dir, chosen, slices, store, fingerprint, *, gpus, dtype, **kw) -> dict[int, list[list[int]]]:
    """Sampled token ids of every shard not yet finished, from vLLM; token shards are themselves
    kept (``{output}.tokens.shards``), so a job killed during the entropy pass does not resample."""
    import gc

    from entcal.vllm_backend import generate_vllm, make_llm

    tok_store = ShardStore(str(store.out) + ".tokens", fingerprint)
    out, llm = {}, None
    for k, sl in enumerate(slices):
        ids = [e for e, _, _ in chosen[sl]]
        if store.read(k, ids)[0] is not None:  # finished already (counted in the main loop)
            continue
        df = tok_store.load(k, ids)
        if df is None:
            llm = llm or make_llm(model_dir, gpus=gpus, dtype=dtype, seed=kw["seed"])
            toks = generate_vllm(llm, [p for _, p, _ in chosen[sl]], **{**kw, "seed": kw["seed"] + sl.start})
            df = pd.DataFrame({"example_id": ids, "token_ids": toks})
            tok_store.save(k, df, ids)
        out[k] = [list(t) for t in df["token_ids"]]
    del llm
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out
