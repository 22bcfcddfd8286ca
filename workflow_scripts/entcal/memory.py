"""Memory plan of every GPU job, from the model's ``config.json`` (no torch here).

Nothing here guesses a batch: each job's batch (generation), sequences per pass (scoring) and
vocabulary chunk follow from the model's shape (layers, KV heads, head dim, vocabulary, width),
its precision, the job's GPUs and their memory (``gpu_memory_gb``), so that weights, KV cache,
activations and logits fit with a margin. Bytes throughout; GB = 1e9 bytes.

Per GPU (g GPUs hold the layers in turn, ``device_map``; embeddings and head sit on one of them):

- weights: parameters x 2 bytes (bf16), or NF4 (``precision: paper``): the decoder's linear weights at
  4 bits plus their double-quantised block scales (0.516 bytes each), everything else in bf16;
- generation: KV cache = batch x (longest prompt + new tokens) x 2 x layers x KV heads x head dim x
  2 bytes (HF's dynamic cache grows by concatenation: + one layer while it is copied, + 10 % for the
  allocator), the activations of one prefill chunk (``prefill_chunk`` tokens per row: residual,
  q/k/v, attention output and the MLP's three intermediates), and the next-token scores in float32
  (the warpers, the recorder and the calibrated samplers hold up to 8 copies of a batch x vocab array);
- scoring: one teacher-forced pass over batch x (prompt + reference) tokens (activations of one layer,
  the last hidden state of every position, the KV cache where the one-step lookahead needs it) and
  the vocabulary projection ``chunk`` positions at a time in float32 (up to 8 copies);
- fixed: the CUDA context, cuBLAS workspaces and the allocator's slack (``overhead_gb``).

A plan fits when the largest GPU's peak is at most ``utilization`` of its memory. What the grid
costs is :mod:`entcal.plan` (``python -m entcal.plan``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GB = 1e9
# the one-step lookahead projects its candidates' hidden states onto the vocabulary this many bytes of float32
# logits at a time (entcal.lookahead): (B x positions x K) candidate rows never become logits at once
LOOKAHEAD_LOGITS_BYTES = 256 * 1024**2
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + 8-bit absmax per 64 + fp32 per 256 absmax blocks


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length")  # the context length in a config.json


@dataclass(frozen=True)
class ModelShape:
    """The architecture facts the plan needs, as written in a model's ``config.json``."""

    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    o_bias: bool = False  # bias on the attention's output projection
    mlp_bias: bool = False
    mlp_matrices: int = 3  # gated MLP (Llama, Qwen2) = 3, plain MLP (GPT-NeoX) = 2
    norm_params: int = 1  # RMSNorm = 1 vector, LayerNorm = 2 (weight and bias)
    max_position: int | None = None  # the model's own context (max_position_embeddings), where config.json says

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelShape":
        """From a ``config.json`` dict (Llama, Qwen2, Mistral-style, GPT-NeoX)."""
        t = cfg.get("model_type", "llama")
        if "text_config" in cfg:  # multimodal wrappers keep the language model's facts here
            return cls.from_config({"model_type": t, **cfg["text_config"]})
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        ctx = next((int(cfg[k]) for k in CONTEXT_KEYS if isinstance(cfg.get(k), int) and cfg[k] > 0), None)
        common = dict(
            model_type=t,
            layers=int(cfg["num_hidden_layers"]),
            hidden=hidden,
            heads=heads,
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            vocab=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            max_position=ctx,
        )
        if t == "gpt_neox":
            bias = bool(cfg.get("attention_bias", True))
            return cls(
                **common,
                kv_heads=heads,
                intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
                qkv_bias=bias,
                o_bias=bias,
                mlp_bias=True,
                mlp_matrices=2,
                norm_params=2,
            )
        attn_bias = bool(cfg.get("attention_bias", False))
        return cls(
            **common,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            intermediate=int(cfg["intermediate_size"]),
            qkv_bias=t == "qwen2" or attn_bias,
            o_bias=attn_bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> "ModelShape":
        f = Path(path) / "config.json"
        try:
            return cls.from_config(json.loads(f.read_text()))
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"cannot read the model's shape from {f}: {type(err).__name__}: {err}") from err

    # -- parameter counts -------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_linear(self) -> int:
        """Weights of one decoder layer's linear maps (the ones NF4 quantises)."""
        d = self.hidden
        return d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d + self.mlp_matrices * d * self.intermediate

    def layer_other(self) -> int:
        """Biases and norms of one layer (kept in bf16 under NF4)."""
        b = (self.q_dim + 2 * self.kv_dim) * self.qkv_bias + self.hidden * self.o_bias
        b += (self.intermediate * (self.mlp_matrices - 1) + self.hidden) * self.mlp_bias
        return b + 2 * self.norm_params * self.hidden

    def embedding_params(self) -> int:
        """Input embedding plus an untied output head."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def n_params(self) -> int:
        """Total parameters, tied weights counted once."""
        return (
            self.layers * (self.layer_linear() + self.layer_other())
            + self.embedding_params()
            + self.norm_params * self.hidden
        )

    def n_params_nonembedding(self) -> int:
        return self.n_params() - self.embedding_params()

    # -- bytes -----------------------------------------------------------------------------------
    def weight_bytes(self, quantization: str = "none", dtype: str = "bfloat16") -> float:
        if quantization == "nf4":
            linear = self.layers * self.layer_linear()
            return linear * NF4_BYTES + (self.n_params() - linear) * 2
        return self.n_params() * BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        """KV cache of one token over all layers (keys and values)."""
        return 2 * self.layers * self.kv_dim * BYTES[dtype]

    def activation_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        """Live activations of one token inside one layer: residual, normed input, q/k/v, attention
        output, and the MLP's intermediates (gate, up, their product)."""
        return (
            3 * self.hidden + self.q_dim + 2 * self.kv_dim + self.q_dim + self.mlp_matrices * self.intermediate
        ) * BYTES[dtype]

    def flops_per_token(self, context: float) -> float:
        """Forward FLOPs of one token at a context of ``context`` tokens: 2 per weight it multiplies
        (the head included, the input embedding a lookup) + attention scores and values."""
        matmul = self.layers * self.layer_linear() + self.vocab * self.hidden
        return 2 * matmul + 4 * self.layers * self.q_dim * context


@dataclass
class Budget:
    """What a job has: GPUs and their memory, with the margins the plan keeps."""

    gpus: int = 1
    gpu_memory_gb: float = 80.0
    utilization: float = 0.9  # the plan fills at most this fraction of each GPU
    overhead_gb: float = 2.0  # CUDA context, cuBLAS workspaces, allocator slack, per GPU

    @property
    def usable(self) -> float:
        return self.gpu_memory_gb * GB * self.utilization - self.overhead_gb * GB


def weights_per_gpu(shape: ModelShape, budget: Budget, quantization: str = "none", dtype: str = "bfloat16") -> float:
    """Weights on the fullest GPU: an even share of the layers, plus the embeddings and head, which
    cannot be split, on one GPU."""
    w = shape.weight_bytes(quantization, dtype)
    if budget.gpus <= 1:
        return w
    emb = shape.embedding_params() * 2
    return (w - emb) / budget.gpus + emb


def generation_peak(
    shape: ModelShape,
    budget: Budget,
    batch: int,
    context: int,
    *,
    quantization: str = "none",
    dtype: str = "bfloat16",
    prefill_chunk: int = 512,
    prompt_len: int | None = None,
) -> dict:
    """Bytes on the fullest GPU while generating ``batch`` rows up to ``context`` tokens (longest
    prompt + new tokens). Returns the parts and ``peak``."""
    g = max(1, budget.gpus)
    kv = batch * context * shape.kv_bytes_per_token(dtype) / g
    kv *= (1 + 1 / shape.layers) * 1.1  # one layer copied while its cache grows; allocator rounding
    chunk = min(prefill_chunk, prompt_len or prefill_chunk)
    act = batch * chunk * shape.activation_bytes_per_token(dtype)
    act += batch * chunk * context  # the chunk's boolean attention mask over the keys
    scores = 8 * batch * shape.vocab * 4  # float32 next-token scores: warpers, recorder, calibrated samplers
    parts = {
        "weights": weights_per_gpu(shape, budget, quantization, dtype),
        "kv_cache": kv,
        "activations": act,
        "scores": scores,
        "overhead": budget.overhead_gb * GB,
    }
    parts["peak"] = sum(parts.values())
    return parts


def scoring_peak(
    shape: ModelShape,
    budget: Budget,
    batch: int,
    seq_len: int,
    chunk: int,
    *,
    lookahead: int = 0,
    quantization: str = "none",
    dtype: str = "bfloat16",
) -> dict:
    """Bytes on the fullest GPU for a teacher-forced pass over ``batch`` sequences of ``seq_len``
    tokens with the vocabulary projection ``chunk`` positions at a time (``lookahead``: candidates of
    the one-step lookahead, which keeps the KV cache and adds batch x chunk/K x K candidate rows)."""
    g = max(1, budget.gpus)
    tokens = batch * seq_len
    act = tokens * shape.activation_bytes_per_token(dtype) + batch * seq_len * seq_len  # one layer + bool mask
    hidden = 2 * tokens * shape.hidden * BYTES[dtype]  # last hidden state, and its gather at the scored positions
    kv = tokens * shape.kv_bytes_per_token(dtype) / g if lookahead else 0.0
    logits = 8 * chunk * shape.vocab * 4
    if lookahead:  # the candidates' hidden states, and their logits a block at a time (log-softmax and exp beside)
        logits += 3 * LOOKAHEAD_LOGITS_BYTES + batch * 512 * shape.hidden * BYTES[dtype]
    parts = {
        "weights": weights_per_gpu(shape, budget, quantization, dtype),
        "activations": act,
        "hidden": hidden,
        "kv_cache": kv,
        "logits": logits,
        "overhead": budget.overhead_gb * GB,
    }
    parts["peak"] = sum(parts.values())
    return parts


def plan_generation(
    shape: ModelShape,
    budget: Budget,
    context: int,
    *,
    cap: int = 128,
    prompt_len: int | None = None,
    quantization: str = "none",
    dtype: str = "bfloat16",
    prefill_chunk: int = 512,
) -> dict:
    """The largest batch (at most ``cap``) whose generation peak fits; ``batch`` 0 if even one row
    does not. Returns batch, peak (bytes) and the parts at that batch."""
    best = 0
    lo, hi = 1, cap
    while lo <= hi:  # the peak grows with the batch: bisect
        mid = (lo + hi) // 2
        if (
            generation_peak(
                shape,
                budget,
                mid,
                context,
                quantization=quantization,
                dtype=dtype,
                prefill_chunk=prefill_chunk,
                prompt_len=prompt_len,
            )["peak"]
            <= budget.usable
        ):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    parts = generation_peak(
        shape,
        budget,
        max(best, 1),
        context,
        quantization=quantization,
        dtype=dtype,
        prefill_chunk=prefill_chunk,
        prompt_len=prompt_len,
    )
    return {"batch": best, "peak": parts["peak"], "parts": parts, "fits": best > 0}


def plan_scoring(
    shape: ModelShape,
    budget: Budget,
    seq_len: int,
    *,
    cap: int = 64,
    lookahead: int = 0,
    quantization: str = "none",
    dtype: str = "bfloat16",
) -> dict:
    """Sequences per pass (at most ``cap``) and vocabulary chunk (positions) that fit: the chunk is
    the largest power of two up to 1024 whose float32 logits take at most a tenth of the free memory."""
    free = budget.usable - weights_per_gpu(shape, budget, quantization, dtype)
    chunk = 1024
    while chunk > 16 and 8 * chunk * shape.vocab * 4 > 0.1 * max(free, 0):
        chunk //= 2
    best = 0
    for b in range(1, cap + 1):
        if (
            scoring_peak(shape, budget, b, seq_len, chunk, lookahead=lookahead, quantization=quantization, dtype=dtype)[
                "peak"
            ]
            > budget.usable
        ):
            break
        best = b
    parts = scoring_peak(
        shape, budget, max(best, 1), seq_len, chunk, lookahead=lookahead, quantization=quantization, dtype=dtype
    )
    return {"batch": best, "chunk": chunk, "peak": parts["peak"], "parts": parts, "fits": best > 0}


def gpus_needed(
    shape: ModelShape,
    gpu_memory_gb: float,
    context: int,
    *,
    quantization: str = "none",
    dtype: str = "bfloat16",
    min_batch: int = 8,
    options=(1, 2, 4, 8),
) -> int:
    """The fewest GPUs (of ``options``) on which the plan fits a generation batch of ``min_batch`` rows up to
    ``context`` tokens and a scoring pass of one sequence: a hub model's ``gpus`` when its entry gives none."""
    for g in options:
        budget = Budget(gpus=g, gpu_memory_gb=gpu_memory_gb)
        gen = plan_generation(shape, budget, context, cap=min_batch, quantization=quantization, dtype=dtype)
        sc = plan_scoring(shape, budget, context, cap=1, quantization=quantization, dtype=dtype)
        if gen["batch"] >= min_batch and sc["fits"]:
            return g
    raise ValueError(
        f"{shape.model_type} with {shape.n_params() / 1e9:.1f}B parameters does not fit {options[-1]} GPUs "
        f"of {gpu_memory_gb:g} GB at context {context}"
    )


CPU_RUNTIME_GB = 1.0  # Python, torch and transformers themselves, as a job's resident memory before the model


def cpu_job_mb(
    shape: ModelShape,
    kind: str,
    batch: int,
    context: int,
    *,
    prompt_len: int,
    dtype: str = "float32",
    margin: float = 1.3,
) -> int:
    """Host memory (MB, Snakemake's ``mem_mb``) of a CPU generation or scoring job, from the model's
    shape like the GPU plan: the same parts (weights in ``dtype``, KV cache, activations, float32
    scores or logits) plus the weights' float32 copy while a bf16 model loads, the runtime itself
    (:data:`CPU_RUNTIME_GB`), and ``margin`` for the allocator. ``kind``: ``generate`` or ``score``."""
    budget = Budget(gpus=1, gpu_memory_gb=1e6, utilization=1.0, overhead_gb=CPU_RUNTIME_GB)
    if kind == "generate":
        parts = generation_peak(shape, budget, batch, context, dtype=dtype, prompt_len=prompt_len)
    else:
        parts = scoring_peak(shape, budget, batch, context, min(256, context), dtype=dtype)
    load = shape.n_params() * 4 if dtype != "float32" else 0.0  # safetensors float32 -> dtype
    return int(margin * (parts["peak"] + load) / 1e6) + 1
