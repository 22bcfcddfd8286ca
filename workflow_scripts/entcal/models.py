"""One loading path for every model source, and the demo family's architectures.

Model sources (``source`` in a model's config entry):

- ``hf``: a hub repository at a pinned revision, snapshotted by the download rule into
  ``{downloads_dir}/models/{model}`` (see :mod:`entcal.hub`);
- ``local``: an existing ``save_pretrained`` folder (model and tokenizer files together);
- ``train``: a small Llama- or GPT-NeoX-style model that the workflow trains on each dataset.

Whatever the source, :func:`load_model` opens the folder with ``AutoModelForCausalLM`` and
``AutoTokenizer``, never touching the network.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from entcal.memory import GB, Budget, ModelShape, weights_per_gpu

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model folder is missing, incomplete or unreadable; the message names the model."""


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_model_dir(path: str | Path, name: str = "") -> Path:
    """Raise :class:`ModelLoadError` unless ``path`` looks like a ``save_pretrained`` folder."""
    path = Path(path)
    label = f"model {name!r}" if name else "model"
    if not path.is_dir():
        raise ModelLoadError(f"{label}: folder not found: {path}")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{label}: {path} has no config.json (not a save_pretrained folder?)")
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.bin"))
    if not weights:
        raise ModelLoadError(f"{label}: {path} has no weight files (*.safetensors / *.bin)")
    return path


def load_tokenizer(path: str | Path, name: str = ""):
    from transformers import AutoTokenizer

    path = check_model_dir(path, name)
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the model named
        raise ModelLoadError(f"model {name!r}: cannot load tokenizer from {path}: {err}") from err
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, name: str = "", dtype: str = "float32", device: str = "auto", quantization: str = "none",
               gpus: int = 1, gpu_memory_gb: float | None = None):  # fmt: skip
    """(model in eval mode, tokenizer) from a ``save_pretrained`` folder, offline.

    ``quantization``: ``none``, or ``nf4`` (the authors' setting: 4-bit NF4 weights, double-quantised
    block scales, ``dtype`` compute; needs the bitsandbytes package). On CUDA with ``gpus`` > 1 the
    layers are spread evenly over the job's GPUs (``device_map="auto"`` through accelerate, at most
    the plan's share of ``gpu_memory_gb`` per GPU for weights, so the rest is left for the KV cache);
    inputs go to :func:`input_device`, outputs come back on the last GPU.
    """
    from transformers import AutoModelForCausalLM

    path = check_model_dir(path, name)
    tok = load_tokenizer(path, name)
    kwargs = {"dtype": DTYPES[dtype], "local_files_only": True}
    dev = resolve_device(device)
    if quantization == "nf4":
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as err:
            raise ModelLoadError(f"model {name!r}: quantization 'nf4' needs bitsandbytes (pip install bitsandbytes)") from err
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True,
                                                           bnb_4bit_compute_dtype=DTYPES[dtype])  # fmt: skip
    elif quantization != "none":
        raise ModelLoadError(f"model {name!r}: unknown quantization {quantization!r} (none | nf4)")
    spread = dev.type == "cuda" and gpus > 1
    if spread:
        shape = ModelShape.from_dir(path)
        per_gpu = weights_per_gpu(shape, Budget(gpus=gpus), quantization, dtype)
        cap = gpu_memory_gb or torch.cuda.get_device_properties(0).total_memory / GB
        kwargs["device_map"] = "auto"
        kwargs["max_memory"] = {i: f"{min(cap, per_gpu * 1.15 / GB + 1):.1f}GB" for i in range(gpus)}
    elif quantization == "nf4":
        kwargs["device_map"] = {"": dev.index or 0} if dev.type == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"model {name!r}: cannot load weights from {path}: {err}") from err
    if "device_map" not in kwargs:
        model.to(dev)
    model.eval()
    if spread:
        log.info("model %s spread over %d GPUs: %s", name, gpus, sorted({str(d) for d in model.hf_device_map.values()}))
    return model, tok


def input_device(model) -> torch.device:
    """Where a model's inputs go (its input embedding's device; the first GPU of a spread model)."""
    return model.get_input_embeddings().weight.device


def count_params(model) -> dict:
    """Total and non-embedding parameter counts (tied weights counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    untied = head is not None and head.weight is not model.get_input_embeddings().weight
    non_emb = total - emb - (head.weight.numel() if untied else 0)
    return {"n_params_total": int(total), "n_params_nonembedding": int(non_emb)}


def build_model(arch: dict, vocab_size: int, max_positions: int, seed: int = 0):
    """A freshly initialised causal LM from a small architecture spec.

    ``arch``: ``type`` (llama | gpt_neox), ``hidden_size``, ``layers``, ``heads``, ``ffn``.
    Embeddings are tied to the output head.
    """
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=arch["hidden_size"],
        num_hidden_layers=arch["layers"],
        num_attention_heads=arch["heads"],
        intermediate_size=arch["ffn"],
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    kind = arch.get("type", "llama")
    if kind == "llama":
        cfg = LlamaConfig(num_key_value_heads=arch["heads"], **common)
    elif kind == "gpt_neox":
        cfg = GPTNeoXConfig(**common)
    else:
        raise ValueError(f"unknown architecture type {kind!r} (llama | gpt_neox)")
    return AutoModelForCausalLM.from_config(cfg)
