"""The documentation says what the code does: README.md short, with the two commands, the demo's figure and
the cluster steps first; every command of README.md and docs/ names what exists; every column the tables
carry is in docs/outputs.md; the licence, citation and catalog files a published workflow has."""

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import doccheck  # noqa: E402

README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_leads_with_the_commands_the_figure_and_the_cluster_steps():
    lines = README.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    at = {
        name: next(i for i, ln in enumerate(lines) if pat in ln)
        for name, pat in [
            ("demo command", "bash envs/install.sh && .venv/bin/snakemake --cores 2 --configfile config/demo.yaml"),
            ("test command", "bash envs/install.sh && .venv/bin/python -m pytest -q tests"),
            ("figure", "](docs/demo_per_step.png)"),
            ("cluster", "## The paper's grid on a SLURM cluster"),
        ]
    }
    assert at["demo command"] < 30 and at["test command"] < 40 and at["figure"] < 70 and at["cluster"] < 100, at
    steps = re.findall(
        r"^(\d+)\. ", README[README.index("## The paper's grid on a SLURM cluster") :].split("\n## ")[0], flags=re.M
    )
    assert 1 <= len(steps) <= 8 and steps == [str(i + 1) for i in range(len(steps))]
    assert (ROOT / "docs" / "demo_per_step.png").stat().st_size > 10_000
    for link in re.findall(r"\]\(((?:docs|config)/[^)#]+)", README) + ["LICENSE", "CITATION.cff"]:
        assert (ROOT / link).exists(), link


def test_the_readmes_table_is_the_one_the_showcase_command_wrote():
    table = (ROOT / "docs" / "demo_table.md").read_text()
    assert table in README and table.count("\n") == 2 + 5


def test_every_documented_command_names_modules_files_rules_and_keys_that_exist():
    rules, keys = doccheck.rule_names(), doccheck.schema_keys()
    seen, problems = 0, []
    for f in doccheck.DOCS:
        text = f.read_text()
        for cmd in doccheck.code_lines(text):
            seen += 1
            problems += [f"{f.name}: {cmd} -> {p}" for p in doccheck.check_command(cmd, rules, keys)]
        problems += [
            f"{f.name}: config key {k}"
            for k in doccheck.config_key_tokens(text, keys)
            if not doccheck.key_documented(k, keys)
        ]
    assert seen > 30 and not problems, problems


def test_the_command_check_finds_what_does_not_exist():
    rules, keys = doccheck.rule_names(), doccheck.schema_keys()
    assert {"generate", "score", "calibration_table"} <= rules and "generation.n_prompts" in keys
    assert doccheck.key_documented("datasets.{name}.text_rules", keys) and not doccheck.key_documented(
        "generation.nprompts", keys
    )
    bad = {
        ".venv/bin/python -m entcal.nosuch x": "module entcal.nosuch",
        ".venv/bin/python -m entcal.metrics": "has no command line",
        "snakemake --configfile config/nosuch.yaml": "path config/nosuch.yaml",
        "snakemake --forcerun generat --configfile config/demo.yaml": "rule generat",
        "snakemake --configfile config/demo.yaml --config generation.nprompts=3": "config key generation.nprompts",
    }
    for cmd, want in bad.items():
        assert any(want in p for p in doccheck.check_command(cmd, rules, keys)), cmd
    good = ".venv/bin/snakemake --configfile config/demo.yaml --forcerun generate --config seed=1"
    assert doccheck.check_command(good, rules, keys) == []


def test_every_rule_is_in_the_outputs_table():
    text = (ROOT / "docs" / "outputs.md").read_text()
    assert sorted(r for r in doccheck.rule_names() - {"all"} if f"`{r}`" not in text) == []


def test_every_column_of_the_tables_the_code_declares_is_documented(tmp_path):
    """The column lists the package declares, written as the tables they make (the micro run in
    tests/integration/test_workflow.py checks every table a real run writes)."""
    from entcal.aggregate import BOOTSTRAP_COLUMNS, MISSING_COLUMNS
    from entcal.scaling import FIT_COLUMNS
    from entcal.study import SETTING_COLUMNS, STUDY_COLUMNS

    tables = {
        "calibration_study.csv": STUDY_COLUMNS,
        "calibration_settings.csv": SETTING_COLUMNS,
        "missing.csv": MISSING_COLUMNS,
        "entce_bootstrap.parquet": BOOTSTRAP_COLUMNS,
        "scaling_fits.csv": ["family", "dataset", "estimator", *FIT_COLUMNS, *[f"{c}_pooled" for c in FIT_COLUMNS]],
        "predictor.csv": ["alpha_future_entropy", "tf_delta_logloss_one_step_lookahead", "r2_test_ci_low"],
    }
    for name, cols in tables.items():
        df = pd.DataFrame(columns=cols)
        df.to_csv(tmp_path / name, index=False) if name.endswith(".csv") else df.to_parquet(tmp_path / name)
    assert doccheck.undocumented(tmp_path) == {}


def test_the_column_check_finds_an_undocumented_column_and_table(tmp_path):
    doc = tmp_path / "outputs.md"
    text = (ROOT / "docs" / "outputs.md").read_text()
    assert "`n_seq`" in text
    doc.write_text(text.replace("`n_seq`", "n_seq"))
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame(columns=["alpha", "m", "n_seq", "steps"]).to_csv(tables / "prop31.csv", index=False)
    pd.DataFrame(columns=["a"]).to_csv(tables / "nosuch_table.csv", index=False)
    pd.DataFrame(columns=["alpha_tempreature"]).to_csv(tables / "predictor.csv", index=False)
    assert doccheck.undocumented(tables, doc) == {
        "prop31.csv": ["n_seq"],
        "nosuch_table.csv": ["(table not named in docs/outputs.md)"],
        "predictor.csv": ["alpha_tempreature"],
    }


def test_licence_citation_and_catalog_files():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["type"] == "software"
    paper = cff["preferred-citation"]
    assert paper["title"] == "On the Entropy Calibration of Language Models" and paper["year"] == 2025
    assert [a["family-names"] for a in paper["authors"]] == ["Cao", "Valiant", "Liang"]
    cat = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(cat) == {"mandatory-flags", "software-stack-deployment"}
    assert cat["mandatory-flags"]["flags"] and cat["software-stack-deployment"] == {
        "conda": True,
        "apptainer": False,
        "apptainer+conda": False,
        "report": True,
    }
    # what the catalog file claims holds: every rule that runs code names a conda environment that exists
    envs = [m for f in (ROOT / "rules").glob("*.smk") for m in re.findall(r'conda:\s*\n\s*"([^"]+)"', f.read_text())]
    assert envs and all((ROOT / "rules" / e).resolve().is_file() for e in envs)


@pytest.mark.parametrize("n", [2, 5])
def test_showcase_rows_are_the_largest_models_at_t1_without_checkpoints(n):
    from entcal.showcase import headline_rows, markdown_table

    s = pd.DataFrame(
        [
            {
                "model": "big",
                "dataset": "code",
                "sampler": "ancestral",
                "temperature": 1.0,
                "n_params": 9e8,
                "checkpoint_of": None,
            },
            {
                "model": "big",
                "dataset": "code",
                "sampler": "ancestral",
                "temperature": 0.8,
                "n_params": 9e8,
                "checkpoint_of": None,
            },
            {
                "model": "big",
                "dataset": "code",
                "sampler": "top_p",
                "temperature": 1.0,
                "n_params": 9e8,
                "checkpoint_of": None,
            },
            {
                "model": "big_tok5",
                "dataset": "code",
                "sampler": "ancestral",
                "temperature": 1.0,
                "n_params": 9e8,
                "checkpoint_of": "big",
            },
            {
                "model": "mid",
                "dataset": "prose",
                "sampler": "ancestral",
                "temperature": 1.0,
                "n_params": 5e8,
                "checkpoint_of": None,
            },
            {
                "model": "mid",
                "dataset": "code",
                "sampler": "ancestral",
                "temperature": 1.0,
                "n_params": 5e8,
                "checkpoint_of": None,
            },
        ]
    ).assign(
        instruct=False,
        entropy_mean=2.0,
        logloss_mean=1.5,
        entce=0.5,
        entce_se=0.1,
        gen_minus_tf=0.3,
        tf_minus_logloss=0.2,
    )
    rows = headline_rows(s, n)
    assert list(zip(rows["model"], rows["dataset"])) == [("big", "code"), ("mid", "code"), ("mid", "prose")][:n]
    md = markdown_table(rows)
    assert md.count("\n") == 2 + len(rows) and "| big | code | 1 | 2.00 | 1.50 | +0.50 ± 0.10 | +0.30 | +0.20 |" in md


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_documents_resolves():
    broken = []
    for f in doccheck.DOCS:
        text = f.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (f.parent / path).resolve() if path else f
            if not dest.exists():
                broken.append(f"{f.name}: {target} (no file)")
                continue
            if anchor and dest.suffix == ".md":
                heads = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), flags=re.M)}
                heads |= set(re.findall(r'<a id="([^"]+)">', dest.read_text()))
                if anchor not in heads:
                    broken.append(f"{f.name}: {target} (no heading)")
    assert not broken, broken


def test_the_functions_and_rules_the_development_docs_name_exist():
    """Every `name()` docs/development.md quotes is a function of rules/*.smk or of the package, and every
    `rule <name>` it names is a rule."""
    import re

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "development.md").read_text()
    files = [root / "Snakefile", *root.glob("rules/*.smk"), *root.glob("workflow_scripts/entcal/*.py")]
    code = "\n".join(p.read_text() for p in files)
    defined = set(re.findall(r"(?m)^\s*def (\w+)\(", code))
    quoted = set(re.findall(r"`(?:[\w.]+\.)?(\w+)\(\)`", text))
    assert quoted and quoted <= defined, f"named in docs/development.md, defined nowhere: {sorted(quoted - defined)}"
    rules = set(re.findall(r"(?m)^(?:rule|use rule \w+ as) (\w+)", code))
    named = set(re.findall(r"`rule (\w+)`", text))
    assert named <= rules, f"rules named in docs/development.md that do not exist: {sorted(named - rules)}"


def test_the_snakemake_layer_stays_thin():
    """docs/development.md, "The Snakemake layer": rules/common.smk is declarations and thin get_* functions (at most
    250 lines), no rule repeats the rerun plumbing, adapters neither edit sys.path nor read snakemake.config, and no
    package module grows past 400 lines."""
    common = (ROOT / "rules" / "common.smk").read_text().splitlines()
    assert len(common) <= 250, len(common)
    rules = "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    assert "RERUN(" not in rules and "CODE[" not in rules
    for adapter in (ROOT / "workflow_scripts").glob("*.py"):
        text = adapter.read_text()
        assert "sys.path" not in text and "noqa: E402" not in text, adapter.name
        assert "snakemake.config" not in text, f"{adapter.name} reads the configuration outside its params"
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "workflow_scripts" / "entcal").glob("*.py")}
    assert {n: k for n, k in sizes.items() if k > 400} == {}, "split by concern"
