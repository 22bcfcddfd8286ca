"""The configuration as files before it is a dictionary: size and alias bounds, duplicate keys, YTE templates,
the schema's errors in the user's words, and config/README.md generated from the schema."""

from __future__ import annotations

import re
from pathlib import Path

MAX_CONFIG_BYTES = 4 * 2**20  # a configuration file is a few kB; the paper grid's is 20 kB


MAX_CONFIG_NODES = 200_000  # values a configuration may expand to through YAML aliases


def yte_templates(files) -> list[str]:
    """The configuration files among ``files`` that ask Snakemake to render them as YTE templates
    (``__use_yte__: true``): Snakemake runs the Python in them while loading, before the workflow reads them."""
    pattern = re.compile(r"^__use_yte__\s*:\s*(true|True|yes|on)\b", re.M)
    return [str(f) for f in files if Path(f).is_file() and pattern.search(Path(f).read_text(errors="replace"))]


def yaml_bounds(path: str | Path) -> list[str]:
    """A configuration file too large, or expanding through YAML aliases to too many values, for anything to
    walk it (an alias "bomb" of a few lines expands to billions of values: validation would never end).

    Reads the file's size first, then composes the node graph once and counts each node's expanded size with
    memoisation (linear in the file, however the aliases nest).
    """
    import yaml

    path = Path(path)
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        return [
            f"{path}: {size:,} bytes, more than a configuration file may hold ({MAX_CONFIG_BYTES:,}): "
            "is this the right file?"
        ]
    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as err:
        return [f"{path}: not valid YAML ({err})"]
    memo: dict[int, int] = {}

    def expanded(node) -> int:
        if id(node) not in memo:
            memo[id(node)] = 0  # a recursive alias counts once
            kids = (
                [x for kv in node.value for x in kv]
                if isinstance(node, yaml.MappingNode)
                else (node.value if isinstance(node, yaml.SequenceNode) else [])
            )
            memo[id(node)] = 1 + sum(expanded(k) for k in kids)
        return memo[id(node)]

    n = expanded(root) if root is not None else 0
    if n > MAX_CONFIG_NODES:
        return [
            f"{path}: YAML aliases expand it to {n:,} values (more than {MAX_CONFIG_NODES:,}): write the "
            "repeated parts out, or anchor fewer nested aliases"
        ]
    return []


def duplicate_keys(path: str | Path) -> list[str]:
    """Keys that appear twice in the same mapping of a YAML file (YAML itself keeps the last silently:
    a copy-pasted model would vanish from the grid), each with its dotted path and both line numbers."""
    import yaml

    out = []

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for k, v in node.value:
                key = f"{prefix}{k.value}"
                if k.value in seen:
                    out.append(f"{path}: key {key!r} appears twice (lines {seen[k.value]} and {k.start_mark.line + 1})")
                seen.setdefault(k.value, k.start_mark.line + 1)
                walk(v, f"{key}.")
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{prefix[:-1]}[{i}].")

    try:
        walk(yaml.compose(Path(path).read_text()), "")
    except yaml.YAMLError as err:
        out.append(f"{path}: not valid YAML ({err})")
    return out


def schema_errors(config: dict, schema: dict, limit: int = 5) -> list[str]:
    """One short line per schema violation: the key's path, what was expected, and "did you mean" for a
    near miss of an allowed key (instead of the validator's dump of the whole schema and config)."""
    import difflib

    from jsonschema import Draft202012Validator

    out = []
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    for e in errors[:limit]:
        where = ".".join(str(p) for p in e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            allowed = list(e.schema.get("properties", {}))
            for key in sorted(set(e.instance) - set(allowed)):
                near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (allowed: {', '.join(allowed)})"
                out.append(f"{where + '.' if where else ''}{key}: unknown key{hint}")
        elif e.validator == "required":
            out.append(f"{where or 'top level'}: {e.message}")
        else:
            desc = e.schema.get("description", "") if isinstance(e.schema, dict) else ""
            out.append(f"{where or 'top level'}: {e.message}" + (f" — {desc.split('.')[0]}" if desc else ""))
    if len(errors) > limit:
        out.append(f"... and {len(errors) - limit} more")
    return out


def schema_markdown(schema: dict) -> str:
    """config/README.md: every key of the schema with its type, description and default.

    Regenerate with ``python -c "import entcal.config_files as c; c.write_config_readme()"``.
    """

    def walk(props, prefix, out):
        for k, v in props.items():
            t = v.get("type", "")
            dflt = f" Default: `{v['default']}`." if "default" in v and not isinstance(v["default"], dict) else ""
            out.append(
                f"| `{prefix}{k}` | {t if isinstance(t, str) else '/'.join(t)} | {v.get('description', '')}{dflt} |"
            )
            walk(v.get("properties", {}), f"{prefix}{k}.", out)
        return out

    head = ["| key | type | meaning |", "|---|---|---|"]
    parts = [
        "# Configuration keys",
        "",
        "Both `config/config.yaml` (the paper's grid) and `config/demo.yaml` (the CPU demo) follow",
        "`config/schema.yaml`; the workflow validates the configuration when it loads and stops on an",
        "unknown key or a wrong type, naming it. Defaults are filled in when a key is absent; the",
        "effective configuration is written to `{results_dir}/config.effective.yaml`.",
        "This file is generated from the schema (`entcal.config_files.write_config_readme`).",
        "",
        "## Top level",
        "",
        *walk(schema["properties"], "", list(head)),
    ]
    for name, title, prefix in [
        ("dataset", "Dataset entries (`datasets.<slug>`)", "datasets.<slug>."),
        ("model", "Model entries (`models.<slug>`)", "models.<slug>."),
        ("sampler", "Sampler settings (`samplers.base[]`, `samplers.instruct[]`)", ""),
    ]:
        parts += ["", f"## {title}", "", *walk(schema["$defs"][name]["properties"], prefix, list(head))]
    parts += [
        "",
        "Model sources: `hf` needs `repo_id`, `revision`, `n_params`; `local` needs `path`, `n_params`;",
        "`train` needs `arch` and `train` (the model is trained separately on each dataset's training split);",
        "`gguf` needs `gguf` (`sha256` and `parts` or `path`) and `n_params` "
        "(converted once by the convert_gguf rule).",
        "",
    ]
    return "\n".join(parts)


def write_config_readme(root: str | Path | None = None) -> None:
    import yaml

    root = Path(root) if root else Path(__file__).resolve().parents[2]
    schema = yaml.safe_load((root / "config" / "schema.yaml").read_text())
    (root / "config" / "README.md").write_text(schema_markdown(schema))
