"""One loading path for every model source, and the demo family's architectures.

Model sources (``source`` in a model's config entry):

- ``hf``: a hub repository at a pinned revision, snapshotted by the download rule into
  ``{downloads_dir}/models/{model}--{source}`` (see :mod:`entcal.hub`);
- ``local``: an existing ``save_pretrained`` folder (model and tokenizer files together);
- ``train``: a small Llama- or GPT-NeoX-style model that the workflow trains on each dataset;
- ``gguf``: a real pretrained model shipped as a GGUF file (:mod:`entcal.gguf`), converted once by
  :func:`convert_gguf` into ``{downloads_dir}/models/{model}--{source}``.

Whatever the source, :func:`load_model` opens the folder with ``AutoModelForCausalLM`` and
``AutoTokenizer``, never touching the network.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from entcal.memory import CONTEXT_KEYS, GB, Budget, ModelShape, weights_per_gpu

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model folder is missing, incomplete or unreadable; the message names the model."""


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX tiles), as torch reports it."""
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def weight_dtype(dtype: str, device: str = "auto") -> str:
    """The weight dtype a job loads: ``dtype``, or for ``auto`` bfloat16 on a GPU or on a CPU with native
    bf16 and float32 elsewhere (an AVX2-only CPU emulates bf16 matmuls, about 6x slower). Logged; the
    job's sidecar records the result."""
    if dtype != "auto":
        return dtype
    dev = resolve_device(device)
    chosen = "bfloat16" if dev.type == "cuda" or native_bf16() else "float32"
    log.info("dtype auto -> %s (%s; native bf16 on this CPU: %s)", chosen, dev.type, native_bf16())
    return chosen


class DeviceError(RuntimeError):
    """A job was put on a GPU (``device: cuda``, or GPUs in its resources) and finds no usable CUDA device."""


def driver_hint() -> str:
    """The driver rule for the installed torch build: its CUDA version must not exceed the driver's."""
    build = torch.version.cuda
    if not build:
        return (
            "this torch is a CPU-only build: install a CUDA build of the same version, e.g. `pip install "
            f"torch=={torch.__version__.split('+')[0]} --index-url https://download.pytorch.org/whl/cu126` "
            "(docs/cluster.md, "
            "'GPU environment')"
        )
    tag = "cu" + build.replace(".", "")
    floor = " (a 580-series driver or newer for CUDA 13.0)" if build.startswith("13.") else ""
    return (
        f"this torch is built for CUDA {build}: the node's driver must support it{floor} (nvidia-smi's 'CUDA "
        f"Version' >= {build}); with an older driver install the build for its CUDA version (another --index-url "
        f"than https://download.pytorch.org/whl/{tag}; docs/cluster.md, 'GPU environment')"
    )


def cuda_report() -> str:
    """What torch reports about CUDA, in one line, for error messages and sidecars."""
    import os

    build = torch.version.cuda
    parts = [
        f"torch {torch.__version__} ({f'built for CUDA {build}' if build else 'a CPU-only build'})",
        f"cuda.is_available() = {torch.cuda.is_available()}",
        f"CUDA_VISIBLE_DEVICES = {os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')!r}",
    ]
    if build:
        try:
            parts.append(f"device_count() = {torch.cuda.device_count()}")
        except Exception as err:  # a driver too old for the build raises here  # noqa: BLE001
            parts.append(f"device_count() failed: {err}")
    return "; ".join(parts)


def resolve_device(device: str = "auto", gpus: int = 0) -> torch.device:
    """The device a job runs on: ``device`` from the configuration, ``gpus`` from the job's resources.

    A job that the configuration (``device: cuda``) or its resources (``gpus`` > 0) put on a GPU and that
    finds no usable CUDA device fails at once (:class:`DeviceError`): running it on the CPU instead would
    take its whole time limit, then its retries'. ``auto`` with no GPU in the job's resources picks CUDA
    when it is usable, else the CPU (the demo's case); ``cpu`` is the CPU, whatever the resources say.
    """
    if device == "cpu":
        return torch.device("cpu")
    if (device.startswith("cuda") or (gpus or 0) > 0) and not torch.cuda.is_available():
        wanted = f"{gpus} GPU(s) in its resources" if gpus else "device: cuda in the configuration"
        raise DeviceError(
            f"this job expects a CUDA GPU ({wanted}) but finds none: {cuda_report()}. On a GPU node "
            f"check the SLURM request and the driver: {driver_hint()}. To run on CPU on purpose, set "
            "device: cpu and gpus: 0 for the model."
        )
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
    problem = remote_code_problem(path)
    if problem:
        raise ModelLoadError(f"{label}: {problem}")
    return path


def remote_code_problem(path: str | Path) -> str | None:
    """Why the model at ``path`` cannot load without running its repository's own code, or None: its
    ``config.json`` names an architecture transformers does not ship (``model_type``), typically with an
    ``auto_map`` pointing at the repository's Python files. The workflow never sets ``trust_remote_code``."""
    import json

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    cfg = json.loads((Path(path) / "config.json").read_text())
    model_type = cfg.get("model_type")
    if model_type in CONFIG_MAPPING_NAMES:
        return None
    code = sorted(set((cfg.get("auto_map") or {}).values()))
    own = f"; the repository's own code ({', '.join(code)}) would define it" if code else ""
    return (
        f"{path}: config.json model_type {model_type!r} is not an architecture transformers ships{own}. This "
        "workflow never runs a repository's code (trust_remote_code stays off): choose a revision or a repository "
        "with a transformers-native architecture, or convert the weights to one"
    )


def model_context(path: str | Path) -> int | None:
    """The longest sequence the model at ``path`` takes (its ``config.json``: ``max_position_embeddings``
    and the like; a multimodal config's ``text_config``), None where the config says none."""
    import json

    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    for c in (cfg, cfg.get("text_config") or {}):
        for k in CONTEXT_KEYS:
            if isinstance(c.get(k), int) and c[k] > 0:
                return int(c[k])
    return None


def effective_context(path: str | Path, configured: int | None) -> int | None:
    """The configured context (``generation.max_context``, 4096 on the paper grid), never past the model's
    own: Pythia's 2048, for one."""
    own = model_context(path)
    if configured and own:
        return min(int(configured), own)
    return configured or own


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


def load_model(
    path: str | Path,
    name: str = "",
    dtype: str = "float32",
    device: str = "auto",
    quantization: str = "none",
    gpus: int = 0,
    gpu_memory_gb: float | None = None,
):
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
    dev = resolve_device(device, gpus)
    if quantization == "nf4":
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as err:
            raise ModelLoadError(
                f"model {name!r}: quantization 'nf4' needs bitsandbytes (pip install bitsandbytes)"
            ) from err
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=DTYPES[dtype],
        )
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


def count_params_from_config(path: str | Path) -> dict:
    """:func:`count_params` of the model a folder holds, built on the meta device from its config.json: no
    weight is read and no memory taken (a vLLM job never loads the model into transformers)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=False)
    return count_params(model)


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
