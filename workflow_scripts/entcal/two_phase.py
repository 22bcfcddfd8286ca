"""The two-phase generation of ``precision: paper``: the sampled tokens first (:func:`sample_tokens`, from vLLM or
from transformers without the entropy recorder; their shards kept, so a job killed later does not sample again),
then the exact entropy pass over them (:func:`entropy_rows`)."""

from __future__ import annotations

import gc

import pandas as pd
import torch

from entcal.generate import sample_with_entropy
from entcal.models import (
    effective_context,
    load_model,
)
from entcal.predictor import load_head
from entcal.sampling import calibrated_processors
from entcal.shards import ShardStore
from entcal.vllm_backend import close_llm, entropy_pass, generate_vllm, make_llm


def entropy_rows(model, prompts, generated, setting, calib, head, ends, pad_id, batch_size) -> list[dict]:
    """Rows of the two-phase path: the exact entropy pass over the sampled tokens."""
    rows = entropy_pass(
        model, prompts, generated, setting, batch_size=batch_size, pad_id=pad_id, calib=calib or None, head=head
    )
    for row in rows:
        row["stopped_at_eos"] = bool(row["token_ids"] and row["token_ids"][-1] in set(ends))
    return rows


def sample_tokens(
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
