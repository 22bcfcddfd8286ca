"""Checks that the documentation says what the code does: every column a run writes to `tables/` is in
docs/outputs.md, and every command README.md and docs/ show names a rule, a config key, a module or a file
that exists. Used by tests/unit/test_docs.py and, on a finished micro run, tests/integration/test_workflow.py."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WRITTEN = ("benchmarks/results/", "results/")  # folders the benchmarks and the workflow write
TICKS = re.compile(r"`([^`]+)`")  # a span may wrap onto the next line


def paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines (a Markdown table is one block)."""
    return [b for b in re.split(r"\n\s*\n", text) if b.strip()]


def documented_columns(doc: Path = ROOT / "docs" / "outputs.md") -> tuple[set[str], list[re.Pattern]]:
    """Backticked names of docs/outputs.md, and the patterns its placeholders make: ``{sampler}`` is any
    sampler of the registry; ``{column}`` is any name backticked in the same paragraph (``{column}_pooled``:
    each column of that paragraph with the suffix)."""
    from entcal.samplers import SAMPLERS

    names, patterns = set(), []
    for block in paragraphs(doc.read_text()):
        found = [x.strip() for t in TICKS.findall(block) for x in re.split(r"[,\s]+", t) if x.strip()]
        plain = {x for x in found if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", x)}
        names |= plain
        for x in found:
            if "{" not in x or not re.fullmatch(r"[A-Za-z0-9_{}]+", x):
                continue
            rx = re.escape(x).replace(r"\{sampler\}", "(?:" + "|".join(map(re.escape, SAMPLERS)) + ")")
            rx = rx.replace(r"\{column\}", "(?:" + "|".join(map(re.escape, sorted(plain))) + ")") if plain else rx
            if "{" not in rx.replace(r"\{", ""):
                patterns.append(re.compile(rx))
    return names, patterns


def table_columns(tables: Path) -> dict[str, list[str]]:
    out = {}
    for f in sorted(tables.iterdir()):
        if f.suffix == ".csv":
            out[f.name] = list(pd.read_csv(f, nrows=0).columns)
        elif f.suffix == ".parquet":
            import pyarrow.parquet as pq

            out[f.name] = list(pq.read_schema(f).names)
    return out


def undocumented(tables: Path, doc: Path = ROOT / "docs" / "outputs.md") -> dict[str, list[str]]:
    """{table file: its columns that docs/outputs.md does not document}, for every CSV and Parquet in ``tables``;
    a table whose name docs/outputs.md never mentions is reported whole."""
    names, patterns = documented_columns(doc)
    text = doc.read_text()
    missing = {}
    for name, cols in table_columns(tables).items():
        if name not in text:
            missing[name] = ["(table not named in docs/outputs.md)"]
            continue
        bad = [c for c in cols if c not in names and not any(p.fullmatch(c) for p in patterns)]
        if bad:
            missing[name] = bad
    return missing


# ---------------------------------------------------------------- commands shown in the documentation


def code_lines(text: str) -> list[str]:
    """Commands in fenced ``bash`` blocks and in inline code that starts with a known program."""
    out = []
    for block in re.findall(r"```(?:bash|sh|)\n(.*?)```", text, flags=re.S):
        out += [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    starts = (".venv/bin/", "snakemake ", "python ", "bash ", "cd ")
    out += [" ".join(t.split()) for t in TICKS.findall(text) if t.startswith(starts)]
    return out


def rule_names() -> set[str]:
    names = set()
    for f in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")]:
        names |= set(re.findall(r"^(?:local)?rule (\w+):", f.read_text(), flags=re.M))
    return names


def schema_keys() -> set[str]:
    """Dotted keys of config/schema.yaml at any depth (``$ref`` followed; a map's entries become ``*``)."""
    import yaml

    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    keys: set[str] = set()

    def walk(node, prefix, depth=0):
        if not isinstance(node, dict) or depth > 8:
            return
        if "$ref" in node:
            walk(schema["$defs"][node["$ref"].split("/")[-1]], prefix, depth + 1)
        for k, v in (node.get("properties") or {}).items():
            keys.add(prefix + k)
            walk(v, prefix + k + ".", depth + 1)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], prefix + "*.", depth + 1)
        for sub in ("items", "then", "else"):
            walk(node.get(sub), prefix, depth + 1)
        for sub in ("anyOf", "oneOf", "allOf"):
            for x in node.get(sub) or []:
                walk(x, prefix, depth + 1)

    walk(schema, "")
    return keys


def key_documented(token: str, keys: set[str]) -> bool:
    """``generation.n_prompts``, ``datasets.*.text_rules``, ``datasets.{name}.path``: in the schema."""
    k = re.sub(r"\{[^}]*\}", "*", token)
    return k in keys or any(re.fullmatch(re.escape(x).replace(r"\*", r"[^.]+"), k) for x in keys)


def config_key_tokens(text: str, keys: set[str]) -> list[str]:
    """Backticked dotted names whose first part is a top-level configuration key."""
    tops = {k.split(".")[0] for k in keys if "." not in k}
    out = []
    for t in TICKS.findall(text):
        m = re.fullmatch(r"([a-z_]+)\.([a-z_*.{}]+)", t.strip())
        if m and m.group(1) in tops:
            out.append(t.strip())
    return out


def module_exists(mod: str) -> bool:
    parts = mod.split(".")
    base = ROOT / "workflow_scripts" if parts[0] == "entcal" else ROOT
    p = base.joinpath(*parts)
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file() or (p / "__main__.py").is_file()


def has_main(mod: str) -> bool:
    p = (ROOT / "workflow_scripts").joinpath(*mod.split(".")).with_suffix(".py")
    tree = ast.parse(p.read_text())
    return any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)


def check_command(cmd: str, rules: set[str], keys: set[str]) -> list[str]:
    """What in one documented command does not exist: a module, a file or folder it names, a rule given as a
    target or to --forcerun, a --config key."""
    problems = []
    try:
        words = shlex.split(cmd)
    except ValueError:
        return []
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        if prev == "-m" and w.startswith("entcal"):
            if not module_exists(w):
                problems.append(f"module {w}")
            elif not has_main(w):
                problems.append(f"module {w} has no command line")
        if prev == "-m" and w == "pytest":
            continue
        if prev in ("--configfile", "--profile") or re.fullmatch(
            r"(config|envs|benchmarks|profiles|tests|docs)/[\w./-]+", w
        ):
            path = ROOT / w if "/" in w else ROOT / "profiles" / w
            if prev == "--profile" and w == "slurm":
                continue  # the site profile, written by python -m entcal.profile install slurm
            if "…" in w or "<" in w or "*" in w or w.startswith(WRITTEN):
                continue
            # a path after --configfile/--profile must exist; any other may be the command's output, in a folder
            # that exists
            if not path.exists() and (prev in ("--configfile", "--profile") or not path.parent.is_dir()):
                problems.append(f"path {w}")
        if prev in ("--forcerun", "--until", "--omit-from") and re.fullmatch(r"\w+", w) and w not in rules:
            problems.append(f"rule {w}")
        if prev == "--config" or (i and words[i - 1].startswith("--config") and "=" in w):
            for item in [w]:
                key = item.split("=", 1)[0]
                if key and not any(k == key or k.startswith(key + ".") for k in keys):
                    problems.append(f"config key {key}")
    return problems
