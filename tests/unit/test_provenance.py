"""Code fingerprints and the provenance check (entcal.fingerprint, entcal.provenance)."""

import json
import os
import re
from pathlib import Path

import pytest

from entcal.fingerprint import EXECUTION_MODULES, source_hash, stage_fingerprints, stage_modules
from entcal.provenance import (
    SECTION_READERS,
    differences,
    ensure_flags,
    provenance,
    raise_flags,
    rerun_flag,
    stale_stages,
    write_marker,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "workflow_scripts"

BASE = '''"""Module docstring."""

import math


def f(x):
    """Docstring."""
    return math.log(x) + 1  # a comment
'''


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "edit, same",
    [
        (lambda s: s.replace("# a comment", "# another comment"), True),
        (lambda s: s.replace('"""Docstring."""', '"""A longer docstring,\n    over two lines."""'), True),
        (lambda s: s.replace("\n\ndef f", "\n\n\n\ndef f"), True),
        (lambda s: s.replace("math.log(x) + 1", "math.log(\n        x\n    ) + 1"), True),  # wrapped in parentheses
        (lambda s: s.replace("+ 1", "+ 2"), False),
        (lambda s: s.replace("math.log(x)", "math.log1p(x)"), False),
        (lambda s: s.replace('    """Docstring."""\n', ""), True),
        (lambda s: s.replace('    """Docstring."""\n', '    y = "Docstring."\n'), False),  # a string that is code
        (lambda s: s.replace("return math.log(x) + 1", "return (math.log(x,) + 1)"), True),  # what ruff format changes
        (lambda s: s.replace('"""Docstring."""', '"""Docstring."""\n    s = "a long " "string"'), False),
        (lambda s: s.replace('"""Docstring."""', '"""Docstring."""\n    s = "a long string"'), False),
    ],
)
def test_source_hash_ignores_comments_layout_and_docstrings_only(tmp_path, edit, same):
    a = write(tmp_path / "a.py", BASE)
    b = write(tmp_path / "b.py", edit(BASE))
    assert (source_hash(a) == source_hash(b)) is same


def test_fingerprint_follows_imports_transitively_and_only_the_package(tmp_path):
    pkg = tmp_path / "entcal"
    write(pkg / "__init__.py", '__version__ = "1"\n')
    write(pkg / "metrics.py", "def entropy(p):\n    return -sum(x * x for x in p)\n")
    write(pkg / "aggregate.py", "from entcal.metrics import entropy\n")
    write(pkg / "plots.py", "def draw():\n    from . import metrics  # inside a function\n    return metrics\n")
    write(pkg / "logs.py", "def setup():\n    pass\n")
    write(tmp_path / "agg.py", "import numpy\nfrom entcal.aggregate import *\nfrom entcal.logs import setup\n")
    write(tmp_path / "plot.py", "from entcal import plots\n")
    write(tmp_path / "other.py", "import entcal.logs\n")
    assert [p.name for p in stage_modules(tmp_path / "agg.py", pkg)] == [
        "aggregate.py",
        "metrics.py",
    ]  # logs: execution
    assert [p.name for p in stage_modules(tmp_path / "plot.py", pkg)] == ["metrics.py", "plots.py"]
    before = stage_fingerprints(tmp_path)
    (pkg / "metrics.py").write_text("def entropy(p):\n    return -sum(x * x for x in p) / 2\n")
    after = stage_fingerprints(tmp_path)
    assert {k for k in before if before[k] != after[k]} == {"agg", "plot"}
    (pkg / "logs.py").write_text("def setup():\n    print('more progress')\n")
    (pkg / "__init__.py").write_text('__version__ = "2"\n')
    assert stage_fingerprints(tmp_path) == after  # execution modules and the version rerun nothing
    os.utime(tmp_path / "agg.py", (1, 1))  # touch
    assert stage_fingerprints(tmp_path) == after


def test_the_workflow_fingerprints_every_rule_adapter_and_metrics_reaches_the_stages_that_use_it():
    """Every rule that runs an adapter gets its fingerprint (entcal.lifecycle.Run.attach_stage_inputs, keyed by the
    adapter's name), except the downloads and dump_config (which records them all); the micro run in
    tests/integration/test_workflow.py checks what Snakemake recorded for each job."""
    from entcal.lifecycle import NO_CODE, NO_FLAG

    fps = stage_fingerprints(SCRIPTS)
    rules = "".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    assert "RERUN(" not in rules and "CODE[" not in rules  # no rule repeats the plumbing
    with_code = {}
    for b in re.split(r"(?m)^(?=rule |use rule )", rules)[1:]:
        name = b.split()[1].rstrip(":") if b.startswith("rule ") else b.split(" as ")[1].split()[0]
        script = re.search(r"workflow_scripts/(\w+)\.py", b) or re.match(r"use rule (\w+)", b)
        if name in NO_FLAG:  # benchmark_table: remade after every run
            continue
        if name not in NO_CODE:
            assert script and script.group(1) in fps, f"rule {name} has no code fingerprint"
            with_code[name] = script.group(1)
        else:
            assert name in ("download_dataset", "download_model", "download_featurizer", "dump_config"), name
    assert len(with_code) == 34 and with_code["score_extra"] == "score"  # train_head, calibration_root included
    with_code = set(with_code.values())
    users = {
        s for s in with_code if "metrics.py" in [p.name for p in stage_modules(SCRIPTS / f"{s}.py", SCRIPTS / "entcal")]
    }
    assert {"generate", "score", "calibration_labels", "train_predictor", "calibration_root", "train_head"} <= users
    assert "select_prompts" not in users  # prompt selection computes no entropy: a kernel change reruns none of it
    assert not users & {"aggregate", "plot_per_step", "prepare_dataset", "train_model", "mauve_buckets"}
    for s in with_code:
        assert not {p.name for p in stage_modules(SCRIPTS / f"{s}.py", SCRIPTS / "entcal")} & set(EXECUTION_MODULES)


def test_every_section_of_the_results_configuration_has_its_readers():
    from entcal.config import EXECUTION_KEYS

    schema = (ROOT / "config" / "schema.yaml").read_text()
    import yaml

    top = set(yaml.safe_load(schema)["properties"]) - set(EXECUTION_KEYS[None])
    missing = top - set(SECTION_READERS) - {"seed"}
    assert not missing, f"sections without readers in SECTION_READERS (a change would rerun everything): {missing}"
    rules = "".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    names = set(re.findall(r"(?m)^(?:rule|use rule \w+ as) (\w+)(?::| with:)", rules))
    for section, readers in SECTION_READERS.items():
        assert set(readers) <= names, section


def rec(**over):
    cfg = {
        "seed": 0,
        "results_dir": "results/a",
        "analysis": {"n_boot": 50, "max_len": 24},
        "samplers": {"base": [{"sampler": "ancestral", "temperature": 1.0}]},
    }
    code = {"aggregate": "a1", "generate": "g1", "score": "s1"}
    for k, v in over.items():
        if k == "code":
            code = {**code, **v}
        else:
            cfg = {**cfg, k: v}
    return provenance(cfg, code)


RULES = {
    r: r
    for r in (
        "prepare_dataset",
        "generate",
        "score",
        "aggregate",
        "scaling_fits",
        "plot_per_step",
        "calibration_labels",
        "train_predictor",
    )
}


def test_differences_name_the_stages_they_make_stale():
    from entcal.provenance import stages_for

    assert differences(rec(), rec()) == []
    d = differences(rec(), rec(analysis={"n_boot": 60, "max_len": 24}))
    assert d == [("config", "analysis.n_boot", 50, 60)]
    assert stages_for(d, RULES) == {"aggregate": ["analysis.n_boot: 50 -> 60"]}  # the narrowest listed key
    d = differences(rec(), rec(analysis={"n_boot": 50, "max_len": 32, "new": 1}))
    assert stages_for(d, RULES) == {
        "aggregate": ["analysis.max_len: 24 -> 32", "analysis.new: <absent> -> 1"],
        "calibration_labels": ["analysis.max_len: 24 -> 32", "analysis.new: <absent> -> 1"],
        "train_predictor": ["analysis.max_len: 24 -> 32", "analysis.new: <absent> -> 1"],
        "scaling_fits": ["analysis.new: <absent> -> 1"],
        "plot_per_step": ["analysis.new: <absent> -> 1"],
    }
    assert stages_for(differences(rec(), rec(code={"score": "s2"})), RULES) == {
        "score": ["code of score changed (fingerprint s1 -> s2)"]
    }
    assert stages_for(differences(rec(), rec(results_dir="elsewhere")), RULES) == {}  # a moved folder
    assert set(stages_for(differences(rec(), rec(seed=1)), RULES)) == set(RULES)  # seed: every stage


def test_stale_stages_only_where_snakemake_has_no_record(tmp_path):
    rd, wd = tmp_path / "results", tmp_path / "work"
    rd.mkdir()
    wd.mkdir()
    assert stale_stages(wd, rd, rec(), RULES) == ({}, False)  # nothing recorded yet
    (rd / "provenance.json").write_text(json.dumps(rec()))
    assert stale_stages(wd, rd, rec(), RULES) == ({}, True)  # no record here, but nothing changed
    new = rec(code={"generate": "g2"})
    assert stale_stages(wd, rd, new, RULES) == ({"generate": ["code of generate changed (fingerprint g1 -> g2)"]}, True)
    write_marker(wd, rd)  # a run here: Snakemake's own records decide
    assert stale_stages(wd, rd, new, RULES) == ({}, False)
    (rd / "provenance.json").write_text(json.dumps(rec(seed=3)))  # the folder changed under the marker
    assert stale_stages(wd, rd, new, RULES)[1] is True
    (rd / "provenance.json").write_text("{not json")
    with pytest.raises(ValueError, match="provenance.json is not valid JSON .*--forcerun dump_config"):
        stale_stages(tmp_path / "elsewhere", rd, new, RULES)


def test_flags_sit_at_time_zero_until_raised_with_their_reasons(tmp_path):
    ensure_flags(tmp_path, ["generate", "score"])
    f = rerun_flag(tmp_path, "generate")
    assert f.stat().st_mtime == 0 and f.read_text() == ""
    raise_flags(tmp_path, {"generate": ["samplers.base: [] -> [1]"]})
    assert f.stat().st_mtime > 1e9 and "samplers.base: [] -> [1]" in f.read_text()
    ensure_flags(tmp_path, ["generate"])  # an existing flag is left alone
    assert f.stat().st_mtime > 1e9
    assert rerun_flag(tmp_path, "score").stat().st_mtime == 0


def test_a_string_split_over_lines_is_the_same_code(tmp_path):
    """Splitting a long string into adjacent literals (to keep a line within its length) is no change."""
    a = write(tmp_path / "a.py", 'def f():\n    raise ValueError("a long message about what went wrong")\n')
    b = write(
        tmp_path / "b.py",
        'def f():\n    raise ValueError(\n        "a long message "\n        "about what went wrong"\n    )\n',
    )
    assert source_hash(a) == source_hash(b)
