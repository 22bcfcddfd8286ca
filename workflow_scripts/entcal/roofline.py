"""The roofline of one GPU job, in seconds: a decode step reads the weights once and every row's KV cache, a
prefill or scoring pass costs 2 x parameters FLOPs per token, loading reads the weights at a stated rate; each at a
stated efficiency of the GPU's bandwidth or bf16 peak (GPUSpec), unless a measured throughput is given."""

from __future__ import annotations

from dataclasses import dataclass

from entcal.memory import ModelShape


@dataclass
class GPUSpec:
    """Peak figures of the GPU a cost estimate assumes (NVIDIA's datasheet, H100 SXM by default)."""

    name: str = "H100 SXM 80GB"
    bf16_tflops: float = 989.0  # dense
    bandwidth_gbs: float = 3350.0
    mfu: float = 0.4  # fraction of the bf16 peak reached by prefill and scoring passes
    bandwidth_efficiency: float = 0.5  # fraction of the bandwidth reached by decode steps


def decode_seconds(
    shape: ModelShape,
    gpu: GPUSpec,
    batch: int,
    prompt: int,
    new: int,
    dtype="bfloat16",
    quantization="none",
    extra_forward: int = 0,
    kv_reads: int = 1,
) -> float:
    """Seconds to decode ``new`` tokens for ``batch`` rows (roofline per step, summed over the
    growing context): each step reads the weights once and the cache of every row ``kv_reads``
    times, and computes 1 + ``extra_forward`` tokens per row."""
    w = shape.weight_bytes(quantization, dtype)
    kvt = shape.kv_bytes_per_token(dtype)
    total = 0.0
    n = 16  # integrate over the context growth in 16 pieces
    for k in range(n):
        ctx = prompt + (k + 0.5) * new / n
        bytes_ = w + kv_reads * batch * ctx * kvt
        flops = batch * (1 + extra_forward) * shape.flops_per_token(ctx)
        step = max(
            bytes_ / (gpu.bandwidth_gbs * 1e9 * gpu.bandwidth_efficiency), flops / (gpu.bf16_tflops * 1e12 * gpu.mfu)
        )
        total += step * new / n
    return total


def forward_seconds(shape: ModelShape, gpu: GPUSpec, tokens: float, context: float) -> float:
    """Seconds of a compute-bound teacher-forced pass over ``tokens`` tokens at mean context ``context``."""
    return tokens * shape.flops_per_token(context) / (gpu.bf16_tflops * 1e12 * gpu.mfu)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else 0


# Every GPU job reads the model's weights (their checkpoint bytes, bf16 for the grid) before it computes anything,
# and the NF4 pass of precision: paper reads them again to quantise them: at LOAD_GB_PER_S, an allowance for a
# cluster's shared filesystem (a 70B model: 141 GB, 2.4 minutes), not a measurement.
LOAD_GB_PER_S = 1.0


def load_seconds(shape: ModelShape) -> float:
    """Seconds to read a model's checkpoint (bf16 bytes) at :data:`LOAD_GB_PER_S`."""
    return shape.weight_bytes("none", "bfloat16") / (LOAD_GB_PER_S * 1e9)
