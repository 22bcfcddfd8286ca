"""Sampling continuations with the entropy of every sampled distribution recorded in the same pass.

The entropy at a step is that of the distribution the token was actually drawn from (after the
temperature, any truncation warper and any calibrated sampler), read off the scores inside
``model.generate`` by :class:`entcal.sampling.EntropyRecorder` placed last: there is no second
forward pass over the generations. No files here: :func:`entcal.generation_jobs.generate_file` writes them.

Rows of :func:`sample_with_entropy`, one per prompt: prompt_len, n_tokens (generated tokens kept, the
end token included when sampled), stopped_at_eos, token_ids, entropy (float32, nats) and logprob (of
the sampled token under the sampled distribution), each of length n_tokens.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from entcal.models import input_device
from entcal.prompts import pad, trim_at_end
from entcal.sampling import EntropyRecorder, sampling_processors


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
    on_step=None,
) -> list[dict]:
    """Sample one continuation per prompt; per step record entropy and the drawn token's logprob.

    ``batches``: slices of ``prompts`` generated together (default: ``batch_size`` at a time); batch
    ``b`` is seeded ``seed + b.start``. ``end_ids``: ids that end a generation (default: the
    tokenizer's eos); the end token is kept. ``extra_processors``: optional function (prompt ids,
    attention mask) -> logits processors for one batch, placed after the sampler's warpers and before
    the entropy recorder. ``record=False`` samples without the recorder (entropy and logprob are then
    None): the token-sampling phase of the two-phase path and the benchmarks' baseline. Prompts longer
    than ``prefill_chunk`` are prefilled that many tokens at a time (bounded activation memory).
    ``on_step(prompts_done, tokens_done)``: called at every decoding step with the prompts finished so
    far (a batch part-way counts by its share of ``max_new_tokens``) and the tokens sampled (progress).
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
        # a KV cache allocated once per batch: a growing cache re-allocates every layer's keys and values
        # at every step, which on CPU fragmented the heap (a real 262k-vocabulary model's job grew by
        # about 55 MB a step) and costs time; docs/demo.md, "Machines differ"
        cache_implementation="static",
    )
    device = input_device(model)
    results, finished, tokens = [], 0, 0
    for sl in batches or fixed_batches(len(prompts), batch_size):
        batch = prompts[sl]
        ids, mask = pad(batch, tok.pad_token_id, side="left")
        ids, mask = ids.to(device), mask.to(device)
        rec = EntropyRecorder()
        extra = extra_processors(ids, mask) if extra_processors else []
        torch.manual_seed(seed + sl.start)
        procs = [*sampling_processors(sampler, temperature, sampler_param), *extra, *([rec] if record else [])]
        if on_step is not None:
            procs.insert(0, _StepTick(on_step, finished, tokens, len(batch), ids.shape[1], max_new_tokens))
        seqs = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=gen_cfg,
            logits_processor=LogitsProcessorList(procs),
        )
        new = seqs[:, ids.shape[1] :].cpu()
        finished, tokens = finished + len(batch), tokens + new.numel()
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


class _StepTick(LogitsProcessor):
    """Reports progress at every decoding step of one batch; leaves the scores alone."""

    def __init__(self, on_step, finished: int, tokens: int, size: int, width: int, max_new_tokens: int):
        self.on_step, self.finished, self.tokens = on_step, finished, tokens
        self.size, self.width, self.max_new = size, width, max_new_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        steps = input_ids.shape[1] - self.width + 1
        self.on_step(self.finished + self.size * steps / self.max_new, self.tokens + self.size * steps)
        return scores
