"""How many sequences a model job runs at once: batches of prompts sized by the memory plan (entcal.memory) for the
device the job has, for generation and for teacher-forced scoring."""

from __future__ import annotations

import logging
import os

from entcal.generate import fixed_batches
from entcal.memory import GB, Budget, ModelShape, plan_generation, plan_scoring
from entcal.models import resolve_device

log = logging.getLogger(__name__)


def generation_batches(prompt_lens: list[int], max_new: int, fits) -> list[slice]:
    """Consecutive batches over prompts sorted by length (ascending): each batch as large as
    ``fits(batch, longest prompt)`` allows (``fits`` returns the largest batch for that prompt length)."""
    out, i = [], 0
    while i < len(prompt_lens):
        j = i + 1
        while j < len(prompt_lens) and j - i < fits(prompt_lens[j]):
            j += 1
        if fits(prompt_lens[j - 1]) < 1:
            raise ValueError(
                f"a prompt of {prompt_lens[j - 1]} tokens + {max_new} new tokens does not fit the GPUs "
                "even alone: give the model more GPUs (models.<name>.gpus) or set gpu_memory_gb"
            )
        out.append(slice(i, j))
        i = j
    return out


def auto_batch_fn(
    shape: ModelShape, budget: Budget, max_new: int, *, cap: int, quantization: str = "none", dtype: str = "bfloat16"
):
    """``fits(prompt_len)`` for :func:`generation_batches`, memoised per prompt length."""
    memo: dict[int, int] = {}

    def fits(prompt_len: int) -> int:
        if prompt_len not in memo:
            memo[prompt_len] = plan_generation(
                shape,
                budget,
                prompt_len + max_new,
                cap=cap,
                prompt_len=prompt_len,
                quantization=quantization,
                dtype=dtype,
            )["batch"]
        return memo[prompt_len]

    return fits


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
