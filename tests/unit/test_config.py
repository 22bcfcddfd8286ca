"""Both configurations validate; wrong keys and types stop with a message naming them."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from entcal.config import ConfigError, check_config, setting_slug

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "config" / "schema.yaml")


def load(name):
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_validate(name):
    cfg = load(name)
    validate(cfg, SCHEMA, set_default=True)
    check_config(cfg)
    assert (
        cfg["precision"] is None and cfg["generation"]["shard_size"] >= 1
    )  # defaults filled in (precision: the preset's)
    assert cfg["generation"]["backend"] in ("hf", "auto")


def test_paper_grid_is_the_papers():
    cfg = load("config.yaml")
    validate(cfg, SCHEMA, set_default=True)
    fams = {}
    for m in cfg["models"].values():
        fams.setdefault(m["family"], []).append(m)
    assert {k: len(v) for k, v in fams.items()} == {"llama2": 6, "llama3": 8, "qwen2.5": 14, "pythia": 5}
    base = cfg["samplers"]["base"]
    assert [s["temperature"] for s in base if s["sampler"] == "ancestral"] == [1.0, 0.95, 0.9, 0.85, 0.8]
    assert {"future_entropy", "one_step_lookahead", "mirostat"} <= {s["sampler"] for s in base}
    assert [s["temperature"] for s in cfg["samplers"]["instruct"]] == [1.0]
    g = cfg["generation"]
    assert (g["n_prompts"], g["prompt_tokens"], g["max_new_tokens"], g["min_reference_tokens"]) == (
        5000,
        128,
        2048,
        1024,
    )
    assert g["max_context"] == 4096
    gpus = {m["n_params"]: m["gpus"] for m in cfg["models"].values()}
    assert all(n <= 8.1e9 for n, k in gpus.items() if k == 1) and all(n >= 3e10 for n, k in gpus.items() if k == 4)


def test_unknown_key_is_named():
    cfg = load("demo.yaml")
    cfg["generation"]["n_promts"] = 3
    with pytest.raises(WorkflowError, match="n_promts"):
        validate(cfg, SCHEMA, set_default=True)


def test_wrong_type_is_named():
    cfg = load("demo.yaml")
    cfg["models"]["s0"]["train"]["tokens"] = "many"
    with pytest.raises(WorkflowError, match="many"):
        validate(cfg, SCHEMA, set_default=True)


def test_hf_model_needs_revision():
    cfg = load("config.yaml")
    del cfg["models"]["pythia_410m"]["revision"]
    with pytest.raises(WorkflowError, match="revision"):
        validate(cfg, SCHEMA, set_default=True)


def test_semantic_errors_name_the_key(tmp_path):
    cfg = load("demo.yaml")
    validate(cfg, SCHEMA, set_default=True)
    bad = copy.deepcopy(cfg)
    bad["models"]["s1"]["arch"]["heads"] = 5
    bad["models"]["mine"] = {
        "family": "x",
        "source": "local",
        "path": str(tmp_path / "none"),
        "n_params": 10,
        "instruct": False,
    }
    with pytest.raises(ConfigError) as err:
        check_config(bad)
    assert "models.s1.arch" in str(err.value) and "models.mine.path" in str(err.value)


def test_setting_slug():
    assert setting_slug({"sampler": "ancestral", "temperature": 0.8}) == "ancestral-t0.8"
    assert setting_slug({"sampler": "ancestral", "temperature": 1}) == "ancestral-t1"


def _schema_keys(props, prefix=""):
    for k, v in props.items():
        yield prefix + k
        yield from _schema_keys(v.get("properties", {}), prefix + k + ".")


def test_every_schema_key_is_documented_and_described():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    doc = (ROOT / "config" / "README.md").read_text()
    keys = list(_schema_keys(schema["properties"]))
    for name, prefix in [("dataset", "datasets.<slug>."), ("model", "models.<slug>."), ("sampler", "")]:
        keys += list(_schema_keys(schema["$defs"][name]["properties"], prefix))
    missing = [k for k in keys if f"`{k}`" not in doc]
    assert not missing, f"config/README.md lacks {missing}"


def test_duplicate_keys_are_found_at_any_depth_with_both_lines(tmp_path):
    from entcal.config_files import duplicate_keys

    p = tmp_path / "c.yaml"
    p.write_text(
        "a: 1\nmodels:\n  x: {n: 1}\n  y: {n: 2}\n  x: {n: 3}\n"
        "samplers:\n  base:\n    - {sampler: a, sampler: b}\na: 2\n"
    )
    found = duplicate_keys(p)
    assert f"{p}: key 'models.x' appears twice (lines 3 and 5)" in found
    assert f"{p}: key 'a' appears twice (lines 1 and 9)" in found
    assert f"{p}: key 'samplers.base[0].sampler' appears twice (lines 8 and 8)" in found
    assert duplicate_keys(ROOT / "config" / "config.yaml") == [] and duplicate_keys(ROOT / "config" / "demo.yaml") == []


def test_schema_errors_are_short_with_a_near_miss():
    from entcal.config_files import schema_errors

    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    cfg = load("demo.yaml")
    cfg["generation"]["max_new_token"] = 3
    cfg["models"]["s0"]["arch"]["hiden_size"] = 3
    cfg["threads"] = "two"
    cfg["zzz"] = 1
    errs = schema_errors(cfg, schema)
    assert "generation.max_new_token: unknown key (did you mean 'max_new_tokens'?)" in errs
    assert "models.s0.arch.hiden_size: unknown key (did you mean 'hidden_size'?)" in errs
    assert any(e.startswith("threads: 'two' is not of type 'integer'") for e in errs)
    assert any(e.startswith("zzz: unknown key (allowed: results_dir, downloads_dir") for e in errs)
    assert schema_errors(load("demo.yaml"), schema) == [] and schema_errors(load("config.yaml"), schema) == []


def test_the_schemas_sampler_list_is_the_registry():
    from entcal.samplers import SAMPLERS

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "sampler" in node.get("properties", {}):
                found.append(node["properties"]["sampler"]["enum"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert found and all(e == list(SAMPLERS) for e in found)


def test_an_unknown_sampler_is_named_with_the_known_ones():
    from entcal.samplers import SAMPLERS

    cfg = load("demo.yaml")
    validate(cfg, SCHEMA, set_default=True)
    cfg["samplers"]["base"] = [{"sampler": "nucleus", "temperature": 1.0}]
    with pytest.raises(ConfigError, match="unknown sampler 'nucleus'.*top_p"):
        check_config(cfg)
    assert "nucleus" not in SAMPLERS


def test_a_real_model_whose_package_is_missing_is_named_at_load(tmp_path):
    from entcal.gguf import gguf_problems

    cfg = {
        "downloads_dir": str(tmp_path),
        "models": {
            "m": {
                "source": "gguf",
                "gguf": {"requirement": "some-model==1.0", "parts": ["no_such_pkg_xyz/m.gguf"], "sha256": "0" * 64},
            },
            "t": {"source": "train"},
        },
    }
    (msg,) = gguf_problems(cfg)
    assert (
        "model 'm'" in msg
        and "'some-model==1.0'" in msg
        and "bash envs/install.sh" in msg
        and "exclude_models=[m]" in msg
    )
    from entcal.records import source_key

    folder = tmp_path / "models" / f"m--{source_key(cfg['models']['m'])}"  # the folder of this very GGUF file
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert gguf_problems(cfg) == []  # converted already: the package is no longer needed


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"sampler": "top_k", "param": 2.5}, "samplers.base[0].param: top_k takes a param integer >= 1, got 2.5"),
        ({"sampler": "top_p", "param": 1.5}, "samplers.base[0].param: top_p takes a param (0, 1], got 1.5"),
        ({"sampler": "min_p", "param": 2}, "samplers.base[0].param: min_p takes a param (0, 1], got 2"),
        ({"sampler": "typical", "param": 1.01}, "samplers.base[0].param: typical takes a param (0, 1], got 1.01"),
        ({"sampler": "top_p", "param": 0}, "samplers.base[0].param: top_p takes a param (0, 1], got 0"),
        ({"sampler": "mirostat", "param": 0}, "samplers.base[0].param: mirostat takes a param > 0, got 0"),
        ({"sampler": "ancestral", "param": 0.5}, "samplers.base[0]: 'ancestral' takes no 'param'"),
        ({"sampler": "min_p"}, "samplers.base[0]: 'param' is required for 'min_p'"),
        (
            {"sampler": "ancestral", "temperature": 1e-5},
            "samplers.base[0]: temperature 1e-05 / param None give the file "
            "name 'ancestral-t1e-05', which is not of the form",
        ),
    ],
)
def test_sampler_settings_are_checked_at_load_naming_the_key(setting, message):
    cfg = load("demo.yaml")
    cfg["samplers"]["base"] = [{"temperature": 1.0, **setting}]
    validate(cfg, SCHEMA, set_default=True)  # the schema alone lets each of these through
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "sampler, param",
    [
        ("top_k", 50),
        ("top_k", 50.0),
        ("top_p", 1.0),
        ("min_p", 0.05),
        ("eta", 0.003),
        ("typical", 0.9),
        ("future_entropy", 0.0),
        ("one_step_lookahead", -0.25),
        ("mirostat", 3.0),
        ("mirostat", None),
    ],
)
def test_valid_sampler_params_pass(sampler, param):
    cfg = load("demo.yaml")
    cfg["samplers"]["base"] = [{"sampler": sampler, "temperature": 0.7, **({} if param is None else {"param": param})}]
    validate(cfg, SCHEMA, set_default=True)
    check_config(cfg)


def test_a_negative_seed_and_a_braced_results_dir_are_named():
    from entcal.config_files import schema_errors

    cfg = load("demo.yaml")
    cfg["seed"] = -1
    assert any(e.startswith("seed:") and "-1" in e for e in schema_errors(cfg, yaml.safe_load(open(SCHEMA))))
    cfg = load("demo.yaml")
    cfg["results_dir"] = "results/{x}"
    validate(cfg, SCHEMA, set_default=True)
    with pytest.raises(ConfigError, match=r"results_dir: 'results/\{x\}' holds a brace"):
        check_config(cfg)


def test_yaml_bounds_stop_an_alias_bomb_and_an_oversized_file(tmp_path):
    from entcal.config_files import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, yaml_bounds

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 leaves
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    (msg,) = yaml_bounds(bomb)
    # the expanded count is exact: level i holds 1 + 10 * (size of level i - 1) nodes
    size = 11
    for _ in range(8):
        size = 1 + 10 * size
    n_total = 1 + sum(1 + s for s in [11, *[int("1" * (k + 2)) for k in range(1, 9)]][:9])  # mapping + keys + values
    assert size == int("1" * 10) and f"{n_total:,} values" in msg and f"{MAX_CONFIG_NODES:,}" in msg
    big = tmp_path / "big.yaml"
    big.write_text("results_dir: " + "x" * MAX_CONFIG_BYTES + "\n")
    assert "more than a configuration file may hold" in yaml_bounds(big)[0]
    assert yaml_bounds(ROOT / "config" / "config.yaml") == [] and yaml_bounds(ROOT / "config" / "demo.yaml") == []


def test_a_local_model_needs_its_tokenizer_and_a_table_row_for_every_token(tmp_path):
    import json

    from tokenizers import Tokenizer, models

    cfg = load("demo.yaml")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 4}))
    cfg["models"]["mine"] = {"family": "x", "source": "local", "path": str(folder), "n_params": 10, "instruct": False}
    validate(cfg, SCHEMA, set_default=True)
    with pytest.raises(ConfigError, match=rf"models.mine.path: {folder} holds no tokenizer \(tokenizer.json, "):
        check_config(cfg)
    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "c": 2, "[UNK]": 3}, unk_token="[UNK]"))
    tok.save(str(folder / "tokenizer.json"))
    check_config(cfg)  # ids 0..3, four rows
    tok.add_special_tokens(["<eos>"])  # id 4: no row for it
    tok.save(str(folder / "tokenizer.json"))
    with pytest.raises(
        ConfigError, match="models.mine.path: its tokenizer has token ids up to 4, but config.json's vocab_size is 4"
    ):
        check_config(cfg)


def test_canonical_sorts_every_mapping_but_the_kept_ones_and_keeps_list_order():
    from entcal.config import canonical

    a = {"b": {"y": 1, "x": [{"q": 1, "p": 2}, 3]}, "models": {"z": {"b": 1, "a": 2}, "a": {}}, "a": 0}
    b = {"a": 0, "models": {"z": {"a": 2, "b": 1}, "a": {}}, "b": {"x": [{"p": 2, "q": 1}, 3], "y": 1}}
    ca, cb = canonical(a, keep=("models",)), canonical(b, keep=("models",))
    assert ca == a and repr(ca) == repr(cb)  # same values; one repr, whatever the order written
    assert list(ca) == ["a", "b", "models"] and list(ca["models"]) == ["z", "a"]  # models keep their order
    assert list(ca["models"]["z"]) == ["a", "b"] and ca["b"]["x"][1] == 3


def test_the_paper_grid_resolves_to_the_authors_choices_and_exact_to_ours():
    """fidelity: authors (config/config.yaml, unedited) fills every sub-switch with the authors' choice; exact with
    ours; a sub-switch set by hand overrides its preset."""
    from snakemake.utils import validate

    from entcal.config import resolve_fidelity

    def resolved(**changes):
        cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        cfg.update(changes)
        validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
        how = resolve_fidelity(cfg)
        return cfg, how

    cfg, how = resolved()
    assert cfg["fidelity"] == "authors" and cfg["precision"] == "paper"
    assert {d["text_rules"] for d in cfg["datasets"].values()} == {"authors"}
    assert (cfg["analysis"]["reference_start"], cfg["analysis"]["estimator"]) == (2, "pooled")
    assert (cfg["analysis"]["smoothing"], cfg["analysis"]["smoothing_logloss"]) == (0.2, 0.1)
    assert all(h == "preset" for _, h in how.values())
    cfg, _ = resolved(fidelity="exact")
    assert cfg["precision"] == "exact" and {d["text_rules"] for d in cfg["datasets"].values()} == {"paper"}
    assert (cfg["analysis"]["reference_start"], cfg["analysis"]["estimator"]) == (1, "mean")
    assert cfg["analysis"]["smoothing_logloss"] == cfg["analysis"]["smoothing"] == 0.2
    cfg, how = resolved(precision="exact")  # the authors' text and estimator, but bf16 weights
    assert cfg["precision"] == "exact" and how["precision"] == ("exact", "configured")
    assert cfg["analysis"]["estimator"] == "pooled"
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    assert demo["fidelity"] == "exact"


def test_no_bootstrap_is_said_at_load(caplog):
    cfg = load("demo.yaml")
    validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
    cfg["analysis"]["n_boot"] = 0
    with caplog.at_level("WARNING"):
        check_config(cfg)
    assert "analysis.n_boot: 0: no bootstrap" in caplog.text and "NaN" in caplog.text


def test_a_results_dir_under_a_file_and_a_relative_corpus_path_are_named(tmp_path, monkeypatch):
    cfg = load("demo.yaml")
    validate(cfg, SCHEMA, set_default=True)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    cfg["results_dir"] = str(blocker / "demo")
    with pytest.raises(ConfigError, match=rf"results_dir: .* cannot be a folder: {blocker} is a file"):
        check_config(cfg)
    cfg = load("demo.yaml")
    validate(cfg, SCHEMA, set_default=True)
    monkeypatch.chdir(tmp_path)  # as with snakemake -d elsewhere: the demo's relative corpus path is not there
    with pytest.raises(
        ConfigError, match=rf"read from the working directory {tmp_path}: run snakemake from the repository root"
    ):
        check_config(cfg)


def test_progress_settings_are_checked_once_at_load(monkeypatch):
    from entcal.logs import progress_problems

    monkeypatch.setenv("ENTCAL_PROGRESS", "bars")
    monkeypatch.setenv("ENTCAL_PROGRESS_INTERVAL", "soon")
    problems = progress_problems()
    assert len(problems) == 2 and "ENTCAL_PROGRESS='bars': use auto, bar or lines" in problems[0]
    assert "ENTCAL_PROGRESS_INTERVAL='soon' is not a number of seconds" in problems[1]
    monkeypatch.setenv("ENTCAL_PROGRESS", "lines")
    monkeypatch.setenv("ENTCAL_PROGRESS_INTERVAL", "15")
    assert progress_problems() == []


def test_every_grid_model_names_its_nominal_size_and_the_authors_plot_it():
    """nominal_params is the size in the repository's name (read here from the name, independently), and the
    authors' preset puts it on Figure 2's axis while ours keeps the counted sizes."""
    import re

    from entcal.config import resolve_fidelity

    cfg = load("config.yaml")
    validate(cfg, SCHEMA, set_default=True)
    for name, spec in cfg["models"].items():
        (size,) = [t for t in spec["repo_id"].split("/")[-1].split("-") if re.fullmatch(r"\d+(\.\d+)?[bBmM]", t)]
        want = float(size[:-1]) * (1e9 if size[-1] in "bB" else 1e6)
        assert spec["nominal_params"] == pytest.approx(want), name
    assert cfg["models"]["llama3_1b"]["nominal_params"] == 1e9 < cfg["models"]["llama3_1b"]["n_params"]
    for fidelity, axis in (("authors", "nominal"), ("exact", "counted")):
        c = load("config.yaml")
        c["fidelity"] = fidelity
        validate(c, SCHEMA, set_default=True)
        resolve_fidelity(c)
        assert c["analysis"]["size_axis"] == axis
