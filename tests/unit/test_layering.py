"""The package's imports point one way: every module imports only modules of lower layers (docs/development.md,
"Code map"), at module level; no import cycle, and none dodged by an import inside a function."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "workflow_scripts" / "entcal"

# layer of every module; a module may import only modules of lower layers
LAYERS = [
    ["__init__", "records"],  # what each result was made from (every job's start and end, through logs)
    [
        "logs",
        "metrics",
        "files",
        "samplers",
        "memory",
        "exact",
        "scaling",
        "report",
        "profile",
        "corpora",
        "runtime",
        "gguf",
        "fingerprint",
        "provenance",
        "config_files",
        "predictor_tables",
        "root_search",
    ],
    ["config", "models", "shards", "tokenization", "theory", "plots", "data", "study", "curves", "roofline"]
    + ["exact_study"],
    ["grid", "hub", "train", "quality", "prompts", "loading", "aggregate", "gguf_convert", "extra_plots"]
    + ["calibrated_points"],
    ["results", "model_shapes", "prompt_jobs"],  # loaders of a run's files, by name; shapes the plan reads; prompts
    ["plan"],  # the grid's cost
    # what the fidelity switches change on a finished run; the README's demo figure; the Snakefile's run and resources
    ["fidelity", "showcase", "lifecycle", "resources"],
    ["tilt", "predictor", "lookahead"],  # the math of calibrated sampling, no files
    ["sampling"],  # the sampler registry made into logits processors
    ["generate", "score"],  # sampling with entropy, scoring references; no files
    ["labels", "vllm_backend", "batches"],  # MC labels; vLLM generation; batch sizes from the memory plan
    ["two_phase", "vllm_entropy", "score_jobs"],  # precision: paper's two phases; the recorder inside vLLM; scoring
    ["generation_jobs", "predictor_jobs"],  # the file jobs of generation and of the predictor
    ["root_jobs"],  # a root search: generation and scoring at each knob value it measures
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
HEAVY = {"torch", "transformers"}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported entcal module, inside a function?) for every import of the file."""
    tree = ast.parse(path.read_text())
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "entcal":
                names = [a.name for a in node.names] or ["__init__"]
            elif node.module.startswith("entcal."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("entcal.")]
        out += [(n, id(node) in local) for n in names]
    return out


def top_level_heavy(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        mods = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        if any(m.split(".")[0] in HEAVY for m in mods):
            return True
    return False


MODULES = sorted(p.stem for p in PKG.glob("*.py"))


def test_every_module_has_a_layer():
    assert set(MODULES) == set(RANK), f"place new modules in LAYERS: {set(MODULES) ^ set(RANK)}"


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_down_the_layers(module):
    path = PKG / f"{module}.py"
    for target, in_function in imports(path):
        assert target in RANK, f"{module} imports unknown entcal.{target}"
        assert RANK[target] < RANK[module], (
            f"entcal.{module} (layer {RANK[module]}) imports entcal.{target} (layer {RANK[target]})"
        )
        if in_function:  # only to keep a torch-free module torch-free until a function needs a model
            assert target == "models" and not top_level_heavy(path), (
                f"entcal.{module} imports entcal.{target} inside a function"
            )


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text(
        "from entcal.generation_jobs import generate_file\n\ndef f():\n    from entcal.score import score_settings\n"
    )
    assert imports(bad) == [("generation_jobs", False), ("score", True)]


def test_the_code_map_in_the_docs_is_these_layers():
    """docs/development.md's code map lists every module once, at the layer this test gives it."""
    import re

    text = (PKG.parents[1] / "docs" / "development.md").read_text()
    documented = {}
    for layer, cell in re.findall(r"(?m)^\| (\d+) \| ([^|]+) \|", text):
        for module in re.findall(r"`(\w+)`", cell):
            assert module not in documented, f"{module} appears twice in the code map"
            documented[module] = int(layer)
    assert documented == {m: r for m, r in RANK.items() if m != "__init__"}
