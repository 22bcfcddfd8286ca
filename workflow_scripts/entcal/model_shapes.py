"""The model shapes the cost plan and the checks at load read: a model's config.json once it is downloaded, else
config/model_shapes.yaml (from the model cards); and whether each model's context holds its prompts and generation."""

from __future__ import annotations

from pathlib import Path

from entcal.grid import DOWNLOAD_TEMPLATES
from entcal.memory import ModelShape
from entcal.config import model_new_tokens
from entcal.records import source_key


def context_problems(config: dict, shapes: dict[str, ModelShape]) -> list[str]:
    """One message per model whose own context (its config.json's max_position_embeddings, within
    ``generation.max_context``) cannot hold a ``prompt_tokens`` prompt plus its generation (its own
    ``max_new_tokens`` or the generation's), naming the model and the fix. Models without a known shape
    are not checked here (the plan names them)."""
    g, max_len = config["generation"], config["analysis"]["max_len"]
    out = []
    for name, spec in config["models"].items():
        if spec["source"] == "train" or name not in shapes:
            continue
        own = shapes[name].max_position
        ctx = min(c for c in (g.get("max_context"), own) if c) if (g.get("max_context") or own) else None
        new = model_new_tokens(config, spec)
        if g.get("context_rule") == "authors" and own and ctx == own and g["prompt_tokens"] + max_len < own:
            continue  # the authors' rule: it generates until its own context, which holds analysis.max_len steps
        if ctx and g["prompt_tokens"] + new >= ctx:
            room = ctx - g["prompt_tokens"] - 1
            why = (
                f"its context is {own} tokens (config.json max_position_embeddings)"
                if own == ctx
                else f"generation.max_context is {ctx}"
            )
            fix = (
                f"set models.{name}.max_new_tokens to at most {room} (and at least analysis.max_len = {max_len}), "
                "or remove the model"
                if room >= max_len
                else "remove the model or lower generation.prompt_tokens"
            )
            out.append(
                f"models.{name}: {why}, which cannot hold a {g['prompt_tokens']}-token prompt plus {new} new "
                f"tokens: {fix}"
            )
        elif new < max_len:
            out.append(
                f"models.{name}: max_new_tokens {new} is below analysis.max_len {max_len}: EntCE over the first "
                f"{max_len} steps needs that many; raise it or lower analysis.max_len"
            )
    return out


def load_shapes(config: dict, shapes_file: str | Path | None = None) -> dict[str, ModelShape]:
    """Shapes of the grid's models: from ``{downloads_dir}/models/{name}--{source}/config.json`` once
    downloaded, from a local model's folder, else from ``shapes_file`` (YAML {name: config.json
    facts}; ``config/model_shapes.yaml`` holds the paper grid's, from the model cards)."""
    import yaml

    table = yaml.safe_load(Path(shapes_file).read_text()) if shapes_file else {}
    out = {}
    for name, spec in config["models"].items():
        downloaded = Path(config.get("downloads_dir", "results/downloads")) / DOWNLOAD_TEMPLATES["model"].format(
            model=name, source=source_key(spec)
        )
        folder = Path(spec["path"]) if spec["source"] == "local" else downloaded
        if (folder / "config.json").is_file():
            out[name] = ModelShape.from_dir(folder)
        elif name in table:
            out[name] = ModelShape.from_config(table[name])
    return out
