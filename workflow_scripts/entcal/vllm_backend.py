"""vLLM generation, paired with an exact entropy pass (used when vLLM is installed and a GPU is present).

vLLM returns only the top log-probabilities of each step, not the entropy over the vocabulary. We
chose to pair vLLM's sampling with one exact teacher-forced pass (Hugging Face, the model's dtype,
bf16 on the paper grid) over prompt + generated tokens, instead of patching vLLM's sampler with a
custom logits processor: the pass reuses the scoring code (vocabulary-chunked, the same
transformers warpers as the HF backend), so both backends compute the entropy of the *same*
distribution with the same code, and the pass is tested on CPU (:func:`entropy_pass`); vLLM's
logits-processor interface changes between releases. The cost is one extra forward pass over the
generations (prefill-speed, far cheaper than generation) that the HF backend does not need.

Samplers vLLM supports natively: ancestral (temperature), top_p, top_k, min_p. typical, eta and the
calibrated samplers run on the HF backend.
"""

from __future__ import annotations

import logging

import numpy as np

from entcal.samplers import VLLM as VLLM_SAMPLERS
from entcal.score import score_settings

log = logging.getLogger(__name__)


def vllm_unusable() -> str | None:
    """Why vLLM cannot run here (not installed, no CUDA device), or None."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError as err:
        return f"vllm is not installed ({err}; see docs/cluster.md, 'GPU environment')"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def choose_backend(requested: str, sampler: str) -> str:
    """``hf`` or ``vllm`` for a job: ``auto`` takes vLLM where it is usable and supports the sampler.
    The log says which backend was taken and why."""
    if requested == "hf":
        log.info("backend hf: configured (generation.backend: hf)")
        return "hf"
    why = f"vLLM does not run the {sampler!r} sampler" if sampler not in VLLM_SAMPLERS else vllm_unusable()
    if why is None:
        log.info("backend vllm (generation.backend: %s): vLLM is installed and a CUDA device is present", requested)
        return "vllm"
    level = logging.WARNING if requested == "vllm" else logging.INFO
    log.log(level, "backend hf (generation.backend: %s): %s", requested, why)
    return "hf"


def sampling_params(sampler: str, temperature: float, param, max_new_tokens: int, seed: int, stop_at_eos: bool,
                    end_ids: list[int]):  # fmt: skip
    from vllm import SamplingParams

    kw = dict(temperature=temperature, top_p=1.0, top_k=-1, min_p=0.0, max_tokens=max_new_tokens, seed=seed,
              ignore_eos=not stop_at_eos, stop_token_ids=list(end_ids) if stop_at_eos and end_ids else None,
              skip_special_tokens=False)  # fmt: skip
    if sampler == "top_p":
        kw["top_p"] = float(param)
    elif sampler == "top_k":
        kw["top_k"] = int(param)
    elif sampler == "min_p":
        kw["min_p"] = float(param)
    return SamplingParams(**kw)


def make_llm(model_dir: str, *, gpus: int, dtype: str, seed: int, max_model_len: int = 4096):
    """A vLLM engine over the local model folder, tensor-parallel over ``gpus``."""
    from vllm import LLM

    return LLM(model=model_dir, tokenizer=model_dir, tensor_parallel_size=max(1, gpus), dtype=dtype, seed=seed,
               max_model_len=max_model_len)  # fmt: skip


def generate_vllm(llm, prompts: list[list[int]], *, sampler: str, temperature: float, param, max_new_tokens: int,
                  seed: int, stop_at_eos: bool, end_ids: list[int]) -> list[list[int]]:  # fmt: skip
    """Generated token ids per prompt (the end token included when sampled: vLLM stops at every id of
    ``end_ids``); request i is seeded seed + i."""
    from vllm.inputs import TokensPrompt

    outs = llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in prompts],
        [sampling_params(sampler, temperature, param, max_new_tokens, seed + i, stop_at_eos, end_ids)
         for i in range(len(prompts))],
    )  # fmt: skip
    return [list(o.outputs[0].token_ids) for o in outs]


def entropy_pass(model, prompts: list[list[int]], generated: list[list[int]], setting: dict, batch_size: int,
                 pad_id: int, calib: dict | None = None, head=None) -> list[dict]:  # fmt: skip
    """Per generated token: the entropy of the distribution it was sampled from (the setting's
    temperature and truncation, or its calibrated sampler with ``calib`` / ``head``) and its
    log-probability, from one teacher-forced pass.

    Returns rows like :func:`entcal.generate.sample_with_entropy` (without the end trimming, which
    the caller's token lists already carry).
    """
    pairs = [(p, g) for p, g in zip(prompts, generated)]
    scored = score_settings(model, pairs, [setting], batch_size, pad_id, epsilon=0.0, calib=calib, head=head)
    rows = []
    for (p, g), s in zip(pairs, scored):
        outside = int(s["outside"][0].sum())
        if outside:
            log.warning("%d sampled tokens fall outside the support recomputed by the entropy pass", outside)
        rows.append({
            "prompt_len": len(p), "n_tokens": len(g), "token_ids": list(g),
            "entropy": s["tf_entropy"][0].astype(np.float32), "logprob": (-s["logloss"][0]).astype(np.float32),
        })  # fmt: skip
    return rows
