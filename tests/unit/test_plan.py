"""The memory plan at the paper grid's real model shapes (no download): parameter counts against the models
transformers builds from the same config.json, KV cache bytes against a real cache, every job fitting."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from entcal.batches import generation_batches
from entcal.memory import GB, Budget, ModelShape, generation_peak, plan_generation, plan_scoring
from entcal.plan import job_rows

ROOT = Path(__file__).resolve().parents[2]
SHAPES = yaml.safe_load((ROOT / "config" / "model_shapes.yaml").read_text())
GRID = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _config(name):
    from transformers import AutoConfig

    facts = dict(SHAPES[name])
    return AutoConfig.for_model(facts.pop("model_type"), **facts)


@pytest.fixture(scope="module")
def shape_dirs(tmp_path_factory):
    """config.json of every grid model, written by transformers from the model-card facts."""
    root = tmp_path_factory.mktemp("shapes")
    out = {}
    for name in SHAPES:
        _config(name).save_pretrained(root / name)
        out[name] = root / name
    return out


def test_every_grid_model_has_a_shape_and_its_size_matches_the_model_card():
    assert set(SHAPES) == set(GRID["models"])
    for name, spec in GRID["models"].items():
        n = ModelShape.from_config(SHAPES[name]).n_params()
        assert abs(n - spec["n_params"]) / spec["n_params"] < 0.05, (name, n, spec["n_params"])


@pytest.mark.parametrize(
    "name", ["llama2_70b", "llama3_1b", "llama3_8b", "qwen25_0_5b", "qwen25_72b", "pythia_410m", "pythia_12b"]
)
def test_parameter_count_equals_the_model_transformers_builds(shape_dirs, name):
    from transformers import AutoModelForCausalLM

    shape = ModelShape.from_dir(shape_dirs[name])
    with torch.device("meta"):  # real module tree, no memory
        model = AutoModelForCausalLM.from_config(_config(name))
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    assert shape.n_params() == n
    head = model.get_output_embeddings()  # a Linear too, tied or not; NF4 leaves it in bf16
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    assert shape.layers * shape.layer_linear() == linear  # what NF4 quantises


def test_kv_bytes_per_token_equal_a_real_cache():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=16,
    )  # GQA and an explicit head_dim, as Llama 3.2
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    with torch.no_grad():
        past = model(torch.randint(0, 64, (3, 11)), use_cache=True).past_key_values
    nbytes = sum(t.numel() * t.element_size() for layer in past.layers for t in (layer.keys, layer.values))
    assert nbytes == 3 * 11 * ModelShape.from_config(cfg.to_dict()).kv_bytes_per_token("bfloat16")


def test_the_papers_batch_does_not_fit_and_the_plan_finds_one_that_does():
    llama2_7b = ModelShape.from_config(SHAPES["llama2_7b"])
    kv = llama2_7b.kv_bytes_per_token() * 128 * 4096
    assert abs(kv / GB - 275) < 1  # 32 layers x 4096 x 2 x 2 bytes x 128 x 4096
    budget = Budget(gpus=1, gpu_memory_gb=80)
    plan = plan_generation(llama2_7b, budget, 4096, cap=128)
    assert 1 <= plan["batch"] < 128 and plan["peak"] <= budget.usable
    worse = generation_peak(llama2_7b, budget, plan["batch"] + 1, 4096)["peak"]
    assert worse > budget.usable  # the largest batch that fits
    # a shorter context (WikiText: 129 + 2048) fits more rows
    assert plan_generation(llama2_7b, budget, 129 + 2048, cap=128, prompt_len=129)["batch"] > plan["batch"]


def test_nf4_weights_are_a_quarter_of_bf16_for_the_decoder():
    s = ModelShape.from_config(SHAPES["llama3_70b"])
    bf16, nf4 = s.weight_bytes("none"), s.weight_bytes("nf4")
    assert 0.25 < nf4 / bf16 < 0.30  # linear weights at ~4.1 bits, embeddings and head stay bf16
    assert nf4 > s.embedding_params() * 2


def paper_config(**changes):
    from snakemake.utils import validate

    from entcal.config import resolve_fidelity

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(changes)
    validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
    resolve_fidelity(cfg)
    return cfg


@pytest.mark.parametrize("precision", ["exact", "paper"])
def test_every_job_of_the_paper_grid_fits_its_gpus(precision):
    from entcal.roofline import GPUSpec

    cfg = paper_config(precision=precision)
    rows = job_rows(cfg, {n: ModelShape.from_config(SHAPES[n]) for n in SHAPES}, GPUSpec())
    assert len(rows) == 33 * 3
    for r in rows:
        assert r["fits"] and r["gen_batch_worst"] >= 1 and r["score_batch"] >= 1, r
        assert r["gen_peak_gb"] <= 80 * 0.9 and r["score_peak_gb"] <= 80 * 0.9, r
        assert r["score_extra_peak_gb"] <= 80 * 0.9, r
        # an entropy pass after the sampling only under precision: paper (exact: recorded inside vLLM's sampler)
        assert (r["entropy_pass_peak_gb"] <= 80 * 0.9) if precision == "paper" else r["entropy_pass_peak_gb"] is None, r
        assert r["gpu_hours"] > 0 and r["longest_job_runtime_min"] <= cfg["max_runtime_min"], r
    by = {(r["model"], r["dataset"]): r for r in rows}
    # GQA and more GPUs fit more rows than Llama 2's full multi-head cache on one GPU
    assert by[("llama3_8b", "wikitext")]["gen_batch_typical"] > by[("llama2_7b", "wikitext")]["gen_batch_typical"]
    # the 70B-class models load across their 4 GPUs
    assert by[("qwen25_72b", "codecontests")]["gpus"] == 4
    # Pythia is planned at its own 2048-token context, not the configured 4096
    assert by[("pythia_12b", "wikitext")]["context"] == 2048 and by[("llama2_7b", "wikitext")]["context"] == 4096


def test_precision_paper_samples_with_bf16_weights_and_plans_the_nf4_pass_apart():
    """Under precision: paper the model samples with its bf16 weights and an NF4 copy gives the entropies: the
    sampling batch is planned for bf16 (a batch planned for NF4 weights, sampled with bf16 ones, needs more than
    the 80 GB of each GPU), the entropy pass and scoring for NF4."""
    from entcal.roofline import GPUSpec

    shapes = {n: ModelShape.from_config(SHAPES[n]) for n in SHAPES}
    exact = {(r["model"], r["dataset"]): r for r in job_rows(paper_config(precision="exact"), shapes, GPUSpec())}
    paper = {(r["model"], r["dataset"]): r for r in job_rows(paper_config(precision="paper"), shapes, GPUSpec())}
    for k, r in paper.items():
        assert (r["gen_batch_worst"], r["gen_peak_gb"]) == (exact[k]["gen_batch_worst"], exact[k]["gen_peak_gb"]), k
        assert r["score_batch"] >= exact[k]["score_batch"], k  # NF4 weights leave more room
    overshoot = []
    for name in ("llama3_70b", "qwen25_72b"):
        shape, budget = shapes[name], Budget(gpus=4, gpu_memory_gb=80)
        nf4 = plan_generation(shape, budget, 4096, cap=128, prompt_len=4096 - 2048, quantization="nf4")
        bf16_peak = generation_peak(shape, budget, nf4["batch"], 4096, prompt_len=4096 - 2048)["peak"] / GB
        overshoot.append(bf16_peak)
    assert min(overshoot) > 80, overshoot  # the plan as it was: NF4's batch with bf16 weights does not fit


def test_the_cost_plan_counts_every_pass():
    """The NF4 entropy pass after every generation under precision: paper (none under exact, where vLLM records
    the entropy in its sampler), a vLLM job's engine start, the paper's scoring and the extras' (with the
    lookahead's K candidates per reference token), and the calibration jobs, each by hand."""
    from entcal.plan import VLLM_START_SECONDS, model_costs, two_phase, uses_vllm
    from entcal.roofline import GPUSpec, forward_seconds, load_seconds

    gpu, shape = GPUSpec(), ModelShape.from_config(SHAPES["llama3_8b"])
    n, new, plen = 5000, 2048, 129
    load = load_seconds(shape)  # every job reads the weights first: 8.03e9 bf16 parameters at 1 GB/s
    assert load == pytest.approx(8_030_261_248 * 2 / 1e9)
    tf = load + forward_seconds(shape, gpu, n * (plen + new), (plen + new) / 2)
    paper = paper_config(precision="paper")
    cp = model_costs(paper, "llama3_8b", shape, "wikitext", gpu)["seconds"]
    assert two_phase(paper, "ancestral") and two_phase(paper, "future_entropy")  # the authors' NF4 pass, every sampler
    assert cp["entropy_pass"]["ancestral-t1"] == pytest.approx(tf) and cp["entropy_pass"][
        "future_entropy-t1"
    ] == pytest.approx(tf)
    cfg = paper_config(precision="exact")  # vLLM samples the samplers it runs and records the entropy itself
    c = model_costs(cfg, "llama3_8b", shape, "wikitext", gpu)
    sec = c["seconds"]
    assert not two_phase(cfg, "ancestral") and sum(sec["entropy_pass"].values()) == 0
    assert uses_vllm(cfg, "top_p") and not uses_vllm(cfg, "future_entropy")  # the calibrated ones: transformers
    assert sec["generate"]["ancestral-t1"] == pytest.approx(
        cp["generate"]["ancestral-t1"] - tf
    )  # the same, less the pass
    assert sec["generate"]["ancestral-t1"] > VLLM_START_SECONDS
    assert sec["score"] == pytest.approx(tf)
    look = cfg["calibration"]["candidates"]
    assert sec["score_extra"] == pytest.approx(tf + forward_seconds(shape, gpu, n * new * look, plen + new / 2))
    assert sec["calibration_labels"] > load and sec["train_predictor"] > load
    # with the transformers backend, no engine to start
    hf = paper_config(precision="exact", generation=dict(cfg["generation"], backend="hf"))
    hs = model_costs(hf, "llama3_8b", shape, "wikitext", gpu)["seconds"]
    assert sum(hs["entropy_pass"].values()) == 0
    assert hs["generate"]["ancestral-t1"] == pytest.approx(sec["generate"]["ancestral-t1"] - VLLM_START_SECONDS)
    # an instruct model runs the paper's setting only: no extras to score
    assert model_costs(cfg, "llama3_8b_instruct", shape, "wikitext", gpu)["seconds"]["score_extra"] == 0


def test_a_model_whose_context_cannot_hold_its_generation_is_named_with_the_fix():
    """Pythia's 2048-token context cannot hold the paper's 128-token prompt plus 2048 new tokens: the grid gives it
    1024; without that, each Pythia model is named with the fix, and no other model is."""
    from entcal.model_shapes import context_problems

    shapes = {n: ModelShape.from_config(SHAPES[n]) for n in SHAPES}
    assert shapes["pythia_410m"].max_position == 2048 and shapes["llama2_7b"].max_position == 4096
    cfg = paper_config()
    assert context_problems(cfg, shapes) == []
    assert {m: s.get("max_new_tokens") for m, s in cfg["models"].items() if s["family"] == "pythia"} == {
        "pythia_410m": 1024,
        "pythia_1_4b": 1024,
        "pythia_2_8b": 1024,
        "pythia_6_9b": 1024,
        "pythia_12b": 1024,
    }
    # the paper grid runs the authors' rule (fidelity: authors): Pythia generates up to 2048 new tokens and stops at
    # its context, so its own max_new_tokens is not used and nothing is a problem
    from entcal.config import model_new_tokens

    assert cfg["generation"]["context_rule"] == "authors"
    assert {model_new_tokens(cfg, s) for s in cfg["models"].values()} == {2048}
    cfg["generation"]["context_rule"] = "model"  # our choice: within its own context, with its own max_new_tokens
    assert context_problems(cfg, shapes) == []
    for spec in cfg["models"].values():
        spec.pop("max_new_tokens", None)
    problems = context_problems(cfg, shapes)
    assert len(problems) == 5 and all(p.startswith("models.pythia_") for p in problems), problems
    assert (
        "models.pythia_410m: its context is 2048 tokens (config.json max_position_embeddings), which cannot hold a "
        "128-token prompt plus 2048 new tokens: set models.pythia_410m.max_new_tokens to at most 1919 (and at "
        "least analysis.max_len = 1000), or remove the model"
    ) in problems
    cfg["models"]["pythia_410m"]["max_new_tokens"] = 900  # fits, but short of the analysed steps
    assert any("max_new_tokens 900 is below analysis.max_len 1000" in p for p in context_problems(cfg, shapes))


def test_slurm_runtimes_follow_the_plan_with_its_margin():
    from entcal.plan import RUNTIME_FLOOR_MIN, RUNTIME_MARGIN, runtime_minutes

    assert runtime_minutes(3600) == 60 * RUNTIME_MARGIN and runtime_minutes(1) == RUNTIME_FLOOR_MIN
    assert runtime_minutes(3601) == int(-(-3601 * RUNTIME_MARGIN // 60))


def test_generation_batches_cover_the_prompts_and_respect_the_plan():
    shape = ModelShape.from_config(SHAPES["llama2_13b"])
    budget = Budget(gpus=2, gpu_memory_gb=80)
    lens = sorted([130] * 50 + [700] * 40 + [1900] * 30)

    def fits(plen):
        return plan_generation(shape, budget, plen + 2048, cap=128, prompt_len=plen)["batch"]

    batches = generation_batches(lens, 2048, fits)
    assert batches[0].start == 0 and batches[-1].stop == len(lens)
    assert all(a.stop == b.start for a, b in zip(batches, batches[1:]))
    for b in batches:
        assert b.stop - b.start <= fits(lens[b.stop - 1])
    assert batches[0].stop - batches[0].start > batches[-1].stop - batches[-1].start  # short prompts, larger batches
    with pytest.raises(ValueError, match="does not fit"):
        generation_batches([10], 2048, lambda plen: 0)


def test_scoring_plan_chunks_the_vocabulary():
    s = ModelShape.from_config(SHAPES["qwen25_72b"])
    p = plan_scoring(s, Budget(gpus=4, gpu_memory_gb=80), 4096)
    assert p["fits"] and p["batch"] >= 1 and 16 <= p["chunk"] <= 1024
    assert 8 * p["chunk"] * s.vocab * 4 <= 0.1 * 80 * GB


def test_plan_command_prints_the_grid(tmp_path):
    out = tmp_path / "plan.csv"
    r = subprocess.run(
        [sys.executable, "-m", "entcal.plan", "config/config.yaml", "--csv", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "workflow_scripts"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "every job fits its GPUs: True" in r.stdout and "GPU-hours" in r.stdout
    import pandas as pd

    df = pd.read_csv(out)
    assert len(df) == 99 and df["fits"].all()


def test_plan_command_fails_for_a_model_it_cannot_plan(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["models"]["mystery_7b"] = dict(cfg["models"]["llama2_7b"], repo_id="someone/mystery-7b")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "model_shapes.yaml").write_text((ROOT / "config" / "model_shapes.yaml").read_text())
    r = subprocess.run(
        [sys.executable, "-m", "entcal.plan", str(tmp_path / "c.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "workflow_scripts"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 1 and "cannot plan ['mystery_7b'] (no shape)" in r.stderr
    assert "GPU-hours" in r.stdout  # the rest is still shown


# google/gemma-3-270m as the demo converts it (config.json of the converted folder; shared/real-models.md)
GEMMA3_270M = {
    "model_type": "gemma3_text",
    "num_hidden_layers": 18,
    "hidden_size": 640,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "intermediate_size": 2048,
    "vocab_size": 262144,
    "tie_word_embeddings": True,
}


def test_cpu_job_memory_of_a_real_model_from_its_config():
    from entcal.memory import CPU_RUNTIME_GB, ModelShape, cpu_job_mb

    shape = ModelShape.from_config(GEMMA3_270M)
    # the real count is 268,098,176; the plan counts two norms a layer, Gemma 3 has six (q/k norms of 256 and
    # two more of 640): 18 x (2 x 256 + 2 x 640) = 32,256 fewer, 0.012 %
    assert abs(shape.n_params() / 268_098_176 - 1) < 2e-4
    B, ctx = 64, 320
    weights = shape.n_params() * 4  # float32
    kv = B * ctx * 2 * 18 * 256 * 4 * (1 + 1 / 18) * 1.1  # static or grown, keys and values of every layer
    scores = 8 * B * 262_144 * 4  # float32 next-token scores, up to 8 copies
    mb = cpu_job_mb(shape, "generate", B, ctx, prompt_len=64, dtype="float32", margin=1.0)
    act = mb * 1e6 - (weights + kv + scores + CPU_RUNTIME_GB * 1e9)
    assert 0 <= act < 0.2e9  # the rest is one prefill chunk's activations: small at 64 tokens
    # a bf16 job also holds the float32 copy while loading; the margin scales the whole plan
    assert cpu_job_mb(shape, "generate", B, ctx, prompt_len=64, dtype="bfloat16", margin=1.0) > mb
    assert abs(cpu_job_mb(shape, "generate", B, ctx, prompt_len=64, margin=1.3) - 1.3 * mb) <= 2


def test_gpus_needed_never_exceeds_the_grids_choice_and_follows_the_weights():
    from entcal.memory import gpus_needed

    context = GRID["generation"]["prompt_tokens"] + 64 + GRID["generation"]["max_new_tokens"]
    need = {n: gpus_needed(ModelShape.from_config(SHAPES[n]), GRID["gpu_memory_gb"], context) for n in GRID["models"]}
    assert all(1 <= need[n] <= spec["gpus"] for n, spec in GRID["models"].items()), need
    # closed form on 80 GB GPUs (72 GB usable less 2 GB overhead): bf16 weights of 13-14B (26-30 GB) fit one,
    # Qwen2.5-32B's 65.5 GB leave too little for 8 rows of 2.3k tokens on one, 70B's 141 GB need four
    # (half of them, 70 GB, plus the untied head and embeddings, exceeds one GPU's 70 GB)
    assert need["llama2_13b"] == need["qwen25_14b"] == 1 and need["qwen25_32b"] == 2
    assert need["llama2_70b"] == need["llama3_70b"] == need["qwen25_72b"] == 4
    assert gpus_needed(ModelShape.from_config(SHAPES["llama2_70b"]), 80, context, quantization="nf4") == 1
    with pytest.raises(ValueError, match="does not fit 8 GPUs of 10 GB"):
        gpus_needed(ModelShape.from_config(SHAPES["qwen25_72b"]), 10, context)


def test_every_gpu_job_of_the_grid_asks_for_its_plan_with_the_margin_within_the_site_limit():
    """The largest models' jobs, the 70B predictor included, ask for twice their plan (reading 141 GB of weights
    counted), and no first attempt of any job of the grid hits max_runtime_min."""
    from entcal.plan import RUNTIME_MARGIN, model_costs, runtime_minutes
    from entcal.roofline import GPUSpec, load_seconds

    cfg = paper_config()
    shapes = {n: ModelShape.from_config(SHAPES[n]) for n in cfg["models"]}
    big = shapes["qwen25_72b"]
    assert 140 < load_seconds(big) < 150 and 130 < load_seconds(shapes["llama2_70b"]) < 140
    longest = 0
    for name, shape in shapes.items():
        for ds in cfg["datasets"]:
            sec = model_costs(cfg, name, shape, ds, GPUSpec())["seconds"]
            jobs = {
                **{f"generate {k}": v for k, v in sec["generate"].items()},
                **{k: sec[k] for k in ("score", "score_extra", "calibration_labels", "train_predictor")},
            }
            for job, s in jobs.items():
                if s == 0:
                    continue
                assert s > load_seconds(shape), (name, ds, job)  # the weights are read first
                asked = runtime_minutes(s)
                assert asked * 60 >= RUNTIME_MARGIN * s and asked <= cfg["max_runtime_min"], (name, ds, job, s, asked)
                longest = max(longest, asked)
    assert 20 * 60 < longest < cfg["max_runtime_min"]  # the lookahead generations of the 72B model: about 24 h
    pred = model_costs(cfg, "llama2_70b", shapes["llama2_70b"], "wikitext", GPUSpec())["seconds"]["train_predictor"]
    assert runtime_minutes(pred) == 20 and 2 * pred < 20 * 60  # the floor is above twice its plan


def test_a_workstation_with_too_few_gpus_names_the_models_and_the_fix():
    from entcal.plan import gpu_shortfall

    cfg = paper_config()
    shapes = {n: ModelShape.from_config(SHAPES[n]) for n in cfg["models"]}
    lines = gpu_shortfall(cfg, shapes, 1)
    named = [line.split(":")[0].removeprefix("models.") for line in lines[:-1]]
    assert "llama2_70b" in named and "qwen25_72b" in named and "llama3_8b" not in named and "pythia_12b" in named
    assert "models.llama2_70b: its jobs need 4 GPUs of 80 GB, this run has 1" in lines
    assert lines[-1].startswith("leave them out (--config exclude_models=[") and "llama2_70b" in lines[-1]
    assert gpu_shortfall(cfg, shapes, 4) == []


def test_pythia_is_planned_as_the_authors_rule_runs_it():
    """Under the paper grid's fidelity (context_rule: authors) Pythia generates until its 2048-token context from
    prompts chosen by every model's rule, and its references are scored whole, up to 4096 tokens: the plan's
    scoring pass is sized for 4096, its generation for the tokens left in its context; under context_rule: model
    both stay within 2048 with its own 1024 new tokens."""
    from entcal.plan import model_costs
    from entcal.roofline import GPUSpec

    shape = ModelShape.from_config(SHAPES["pythia_12b"])
    authors = model_costs(paper_config(), "pythia_12b", shape, "codecontests", GPUSpec())
    assert authors["context"] == 2048 and authors["new"] == 2048 - authors["plen"] < 2048
    budget = Budget(gpus=authors["gpus"], gpu_memory_gb=80)
    assert authors["score_plan"] == plan_scoring(shape, budget, 4096, quantization="nf4", dtype="bfloat16")
    cfg = paper_config()
    cfg["generation"]["context_rule"] = "model"
    model = model_costs(cfg, "pythia_12b", shape, "codecontests", GPUSpec())
    assert model["new"] == 1024 and model["score_plan"] == plan_scoring(
        shape, budget, 2048, quantization="nf4", dtype="bfloat16"
    )
    # the whole references cost more to score under the authors' rule
    assert authors["seconds"]["score"] > model["seconds"]["score"]
