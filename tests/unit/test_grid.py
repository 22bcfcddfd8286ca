"""The grid a configuration defines (entcal.grid): jobs counted by hand from the config files, and
every path from its one template."""

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from entcal.grid import Grid
from entcal.records import source_key

ROOT = Path(__file__).resolve().parents[2]


def grid(name: str) -> Grid:
    cfg = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
    return Grid(cfg)


def test_demo_grid_by_hand():
    g = grid("demo.yaml")
    # s3: 976 steps of 8 x 320 tokens (2.5M // 2560); checkpoints at a quarter and a half of them
    assert g.checkpoints == {"s3_tok624640": ("s3", 624640), "s3_tok1249280": ("s3", 1249280)}
    assert g.models == ["s0", "s1", "s2", "s3", "gemma3_270m", "smollm2_135m_instruct", "s3_tok624640", "s3_tok1249280"]
    # per dataset: s0, s2 x (t1, t0.8) + s1 x (those + future entropy) + s3 x (those 3 + 3 truncations
    # + lookahead + Mirostat) + gemma x (t1, t0.9, t0.8, top-p, min-p) + smollm2 (instruct) x t1
    # + each checkpoint at t1
    jobs = g.generation_jobs()
    assert len(jobs) == 2 * (2 * 2 + 3 + 8 + 5 + 1 + 2) == 46
    assert [s["slug"] for d, m, s in jobs if (d, m) == ("prose", "s0")] == ["ancestral-t1", "ancestral-t0.8"]
    assert [s["slug"] for d, m, s in jobs if (d, m) == ("prose", "s1")] == [
        "ancestral-t1",
        "ancestral-t0.8",
        "future_entropy-t1",
    ]
    assert [s["slug"] for d, m, s in jobs if (d, m) == ("code", "gemma3_270m")] == [
        "ancestral-t1",
        "ancestral-t0.9",
        "ancestral-t0.8",
        "top_p0.9-t1",
        "min_p0.05-t1",
    ]
    assert [s["slug"] for d, m, s in jobs if (d, m) == ("code", "smollm2_135m_instruct")] == ["ancestral-t1"]
    assert g.calibrated == ["s1", "s3"] and g.calibrated_samplers("s3") == [
        "future_entropy",
        "mirostat",
        "one_step_lookahead",
    ]
    # real models are converted once into downloads_dir, like hub snapshots
    key = source_key(g.config["models"]["gemma3_270m"])
    assert (
        g.model_folder("gemma3_270m", "prose")
        == g.model_path("gemma3_270m", "code")
        == f"results/downloads/models/gemma3_270m--{key}"
    )
    agg = {(j["dataset"], j["model"], j["setting"]): j for j in g.aggregate_jobs()}
    real = agg[("prose", "smollm2_135m_instruct", "ancestral-t1")]
    assert (real["family"], real["instruct"], real["n_params"], real["train_tokens"]) == (
        "smollm2",
        True,
        134515008,
        None,
    )
    ck = agg[("code", "s3_tok624640", "ancestral-t1")]
    assert (ck["checkpoint_of"], ck["train_tokens"], ck["family"]) == ("s3", 624640, "demo_llama")
    assert agg[("code", "s3", "top_k50-t1")]["train_tokens"] == 976 * 2560
    assert ck["generations"] == "results/demo/generations/code/s3_tok624640/ancestral-t1.parquet"
    assert ck["scores"] == "results/demo/scores/code/s3_tok624640.parquet"
    # the samplers beyond the paper are scored and aggregated apart: their own score file
    assert agg[("code", "s3", "top_k50-t1")]["scores"] == "results/demo/scores_extra/code/s3.parquet"
    assert agg[("code", "s3", "top_k50-t1")]["part"] == "extra" and ck["part"] == "paper"
    # per dataset, beyond the paper: s1's tilt, s3's 3 truncations + 3 calibrated samplers, gemma's top-p and min-p
    assert len(g.aggregate_jobs("extra")) == 2 * (1 + 6 + 2) and len(g.aggregate_jobs("paper")) == 46 - 18
    assert {j["sampler"] for j in g.aggregate_jobs("paper")} == {"ancestral"}
    assert g.models_with("extra") == ["s1", "s3", "gemma3_270m"]
    # a checkpoint lives in its trained model's folder
    assert g.model_folder("s3_tok624640", "code") == "results/demo/models/code/s3"
    assert g.model_path("s3_tok624640", "code") == "results/demo/models/code/s3/checkpoints/tokens_624640"
    # 3 dataset files x 2 + (prompts, scores) x 8 models x 2 + extra scores of 3 models x 2 + 46 generations
    # + labels of 2 models x 2
    assert len(g.intermediate_files()) == 6 + 32 + 6 + 46 + 4
    assert g.pattern("generations", ".json") == "results/demo/generations/{dataset}/{model}/{setting}.json"


def test_paper_grid_by_hand():
    g = grid("config.yaml")
    dl = g.config["downloads_dir"]
    # 19 base models x 10 settings (5 temperatures, 3 calibrated samplers, top-p, min-p) + 14 instruct
    # models at temperature 1, on each of the 3 datasets; no checkpoints
    assert len(g.models) == 33 and not g.checkpoints
    assert len(g.generation_jobs()) == 3 * (19 * 10 + 14 * 1) == 612
    assert len(g.calibrated) == 19 and "llama3_8b_instruct" not in g.calibrated
    # the paper's own settings (5 temperatures; the instruct models at 1) apart from the 5 beyond it
    assert len(g.aggregate_jobs("paper")) == 3 * (19 * 5 + 14) and len(g.aggregate_jobs("extra")) == 3 * 19 * 5
    name = "llama3_8b"
    key = source_key(g.config["models"][name])
    assert g.model_folder(name, "wikitext") == g.model_path(name, "wikitext") == f"{dl}/models/{name}--{key}"
    assert g.download_path("model", model=name) == f"{dl}/models/{name}--{key}"
    assert g.download_pattern("featurizer") == f"{dl}/featurizers/{{featurizer}}--{{source}}"
    assert g.train_tokens(name) is None


def test_the_demo_without_gemma_is_one_setting():
    from entcal.config import ConfigError, exclude_models

    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["exclude_models"] = ["gemma3_270m"]
    validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
    exclude_models(cfg)
    g = Grid(cfg)
    assert "gemma3_270m" not in g.models and "smollm2_135m_instruct" in g.models
    # its five settings per dataset go with it (three of them were its own); nobody else's change
    assert len(g.generation_jobs()) == 46 - 2 * 5
    assert all(m != "gemma3_270m" for s in cfg["samplers"]["base"] for m in s.get("models", []))
    cfg["exclude_models"] = ["gemma"]
    with pytest.raises(ConfigError, match=r"exclude_models: unknown model\(s\) \['gemma'\]"):
        exclude_models(cfg)
    cfg["exclude_models"] = list(cfg["models"])  # all of them: said at load, not as an empty concatenation at aggregate
    with pytest.raises(ConfigError, match=r"exclude_models names every model.*Leave at least one out"):
        exclude_models(cfg)


def test_a_run_is_read_from_where_it_is_now(tmp_path):
    from entcal.results import grid as run_grid

    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
    moved = tmp_path / "project" / "results" / "demo"  # a checkout moved: results_dir recorded as results/demo
    moved.mkdir(parents=True)
    (moved / "config.effective.yaml").write_text(yaml.safe_dump(cfg))
    g = run_grid(moved)
    assert g.rd == str(moved) and g.model_folder("s1", "code") == str(moved / "models" / "code" / "s1")
    key = source_key(cfg["models"]["gemma3_270m"])
    assert g.model_folder("gemma3_270m", "code") == str(
        tmp_path / "project" / "results" / "downloads" / "models" / f"gemma3_270m--{key}"
    )
    renamed = tmp_path / "copy_of_demo"  # a copied folder under another name: its own files all the same
    renamed.mkdir()
    (renamed / "config.effective.yaml").write_text(yaml.safe_dump(cfg))
    assert run_grid(renamed).path("summary") == str(renamed / "tables" / "summary.csv")


def test_a_download_folder_is_keyed_by_its_source_not_its_name():
    """Two configurations that give one model name different files (another GGUF hash, another revision) get two
    folders; what does not change the files (the entry's order, its prompt count, its dtype) keeps one."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
    import copy

    spec = cfg["models"]["gemma3_270m"]
    other = copy.deepcopy(spec)
    other["gguf"]["sha256"] = "0" * 64
    same = dict(reversed(list(copy.deepcopy(spec).items())), n_prompts=3, dtype="float32")
    assert source_key(other) != source_key(spec) == source_key(same)
    hub = {"source": "hf", "repo_id": "EleutherAI/pythia-410m", "revision": "a" * 40}
    assert source_key(hub) != source_key(dict(hub, revision="b" * 40)) != source_key(dict(hub, repo_id="x/y"))
    a, b = Grid(cfg), Grid({**cfg, "models": {**cfg["models"], "gemma3_270m": other}})
    assert a.model_folder("gemma3_270m", "code") != b.model_folder("gemma3_270m", "code")
    assert a.model_folder("gemma3_270m", "code").startswith(f"{cfg['downloads_dir']}/models/gemma3_270m--")
