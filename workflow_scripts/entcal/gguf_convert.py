"""A real model shipped as a GGUF file, converted once into a transformers folder (``dtype: auto``): its parts
found, its tokenizer rebuilt, its weights dequantized and saved."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch

from entcal.gguf import CHUNK, GGUFError, quantization_type, verified_parts
from entcal.models import ModelLoadError, check_model_dir, count_params

log = logging.getLogger(__name__)


def gguf_file(parts: list[Path], workdir: Path) -> Path:
    """The GGUF file itself: the single part, or the parts concatenated into ``workdir/model.gguf``."""
    if len(parts) == 1:
        return parts[0]
    path = Path(workdir) / "model.gguf"
    with open(path, "wb") as dst:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, dst, CHUNK)
    return path


def gguf_tokenizer(name: str, spec: dict, workdir: str | Path):
    """The tokenizer of a ``source: gguf`` model read straight from its (verified) GGUF file, as the
    conversion saves it; ``workdir`` holds the concatenated file of a multi-part model."""
    from transformers import AutoTokenizer

    try:
        path = gguf_file(verified_parts(name, spec), Path(workdir))
    except GGUFError as err:
        raise ModelLoadError(str(err)) from err
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)


def convert_gguf(name: str, spec: dict, out_dir: str | Path) -> Path:
    """Verify, dequantise and save model ``name`` (a ``source: gguf`` entry) as a ``save_pretrained``
    folder at ``out_dir``, written under a temporary name and renamed when whole."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    t0 = time.time()
    g = spec["gguf"]
    try:
        parts = verified_parts(name, spec)
    except GGUFError as err:
        raise ModelLoadError(str(err)) from err
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        gguf_path = gguf_file(parts, tmp)  # the parts concatenated (kept only while converting)
        quant = quantization_type(gguf_path)
        kw = {"gguf_file": gguf_path.name, "local_files_only": True}
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
        # dequantised tensors are ordinary float32 weights: forget the GGUF quantizer so save_pretrained works
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        gen = g.get("generation_config") or {}
        if gen:  # the upstream repository's generation_config.json values (end ids), as published
            model.generation_config = GenerationConfig(**gen)
            for key in ("bos_token_id", "pad_token_id"):
                if gen.get(key) is not None:
                    setattr(model.config, key, gen[key])
        if len(parts) > 1:
            gguf_path.unlink()
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        record = {
            "source": "gguf",
            "requirement": g.get("requirement"),
            "upstream": g.get("upstream"),
            "parts": [str(p) for p in parts],
            "sha256": g["sha256"].lower(),
            "quantization": quant,
            "dequantized_to": "float32",
            "transformers_class": type(model).__name__,
            **count_params(model),
            "vocab_size": int(model.config.get_text_config().vocab_size),
            "seconds": round(time.time() - t0, 1),
        }
        (tmp / "entcal_source.json").write_text(json.dumps(record, indent=2))
        del model
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except Exception as err:  # noqa: BLE001 - re-raised with the model named
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(
            f"model {name!r}: cannot convert {parts[0] if len(parts) == 1 else 'the GGUF parts'}: {err}"
        ) from err
    check_model_dir(out, name)
    log.info(
        "model %s: %s (%s, %s) -> %s in %.0f s",
        name,
        g.get("requirement") or parts[0],
        quant,
        record["sha256"][:12],
        out,
        time.time() - t0,
    )
    return out
