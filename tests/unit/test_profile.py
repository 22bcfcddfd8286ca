"""The SLURM site profile (entcal.profile): site settings where a --config cannot replace them."""

import pytest
import yaml
from snakemake.resources import Resources

from entcal.profile import GPU_RULES, job_venv_of, job_venv_problem, render_slurm, site_facts


def test_site_facts_travel_as_default_resources_and_gpu_settings_as_set_resources():
    text = render_slurm(
        "cpu",
        "proj",
        "gpu",
        "h100",
        gpu_memory_gb=141,
        max_runtime_min=1440,
        gpu_qos="gpu_high",
        gpu_constraint="h100&ib",
        gpu_sbatch="--exclusive",
    )
    p = yaml.safe_load(text)
    assert "config" not in p  # any --config on the command line would replace a profile's config list
    # every string as a quoted Python string: Snakemake evaluates resource values
    assert p["default-resources"] == {
        "slurm_partition": "'cpu'",
        "slurm_account": "'proj'",
        "entcal_gpu_memory_gb": 141,
        "entcal_max_runtime_min": 1440,
    }
    assert set(p["set-resources"]) == set(GPU_RULES)
    assert p["set-resources"]["generate"] == {
        "slurm_partition": "'gpu'",
        "gpu_model": "'h100'",
        "qos": "'gpu_high'",
        "constraint": "'h100&ib'",
        "slurm_extra": "'--exclusive'",
    }
    bare = yaml.safe_load(render_slurm("cpu"))
    assert "set-resources" not in bare  # Snakemake refuses an empty block: it stays commented out
    assert "#     qos: <a GPU QOS>" in render_slurm("cpu", gpu_model="a100")


def test_site_facts_are_read_back_from_snakemakes_parsed_default_resources():
    res = Resources.from_mapping({"slurm_partition": "cpu", "entcal_gpu_memory_gb": 40, "entcal_max_runtime_min": 600})
    assert site_facts(res) == {"gpu_memory_gb": 40.0, "max_runtime_min": 600}
    assert site_facts(Resources.default("bare")) == {} and site_facts(None) == {}


def test_jobs_run_in_their_rules_conda_environments_unless_turned_off():
    """GPU jobs need the GPU set (vLLM and its transformers), not the login node's CPU set: the profile deploys
    each rule's envs/*.yaml with conda by default; `none` says what the starting environment must hold."""
    p = yaml.safe_load(render_slurm("cpu", conda_prefix="/shared/conda"))
    assert p["software-deployment-method"] == "conda" and p["conda-prefix"] == "/shared/conda"
    assert "conda-prefix" not in yaml.safe_load(render_slurm("cpu"))
    off = render_slurm("cpu", software_deployment="none")
    assert "software-deployment-method" not in yaml.safe_load(off)
    assert "pip install -r envs/requirements-gpu.txt" in off


def test_a_run_that_asks_for_conda_without_conda_is_stopped_naming_both_ways_out():
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    from entcal.profile import conda_problem

    msg = conda_problem({DeploymentMethod.CONDA}, which=lambda name: None)
    assert "software-deployment-method: conda" in msg and "no `conda` is on PATH" in msg
    assert "Miniforge" in msg and "--software-deployment venv --job-venv" in msg and "envs/install.sh gpu" in msg
    assert conda_problem({DeploymentMethod.CONDA}, which=lambda name: "/opt/conda/bin/conda") is None
    assert conda_problem(set(), which=lambda name: None) is None  # conda not asked for: nothing to say


def test_the_job_venv_profile_activates_it_and_leaves_software_deployment_off_the_shared_filesystem(tmp_path):
    import yaml

    text = render_slurm(partition="all", software_deployment="venv", job_venv=str(tmp_path / "my env"))
    prof = yaml.safe_load(text)
    assert prof["precommand"] == f". '{tmp_path}/my env/bin/activate'"
    assert "software-deployment" not in prof["shared-fs-usage"] and "input-output" in prof["shared-fs-usage"]
    assert "software-deployment-method" not in prof
    assert job_venv_of(prof["precommand"]) == f"{tmp_path}/my env"
    assert job_venv_of("module load cuda") is None and job_venv_of(None) is None
    with pytest.raises(ValueError, match="--job-venv"):
        render_slurm(software_deployment="venv")


def test_a_job_venv_that_cannot_run_the_jobs_is_named_with_the_fix(tmp_path):
    import sys
    from pathlib import Path

    assert job_venv_problem(None) is None and job_venv_problem("module load cuda") is None
    why = job_venv_problem(f". {tmp_path}/gone/bin/activate")
    assert "gone/bin/python does not exist" in why and "VENV=" in why and "envs/install.sh gpu" in why
    # this test's own environment holds everything a job needs, at this Snakemake's version
    venv = Path(sys.executable).parent.parent
    assert job_venv_problem(f". {venv}/bin/activate") is None
    # a package missing, or another Snakemake: the answer of the environment's own interpreter
    (tmp_path / "v" / "bin").mkdir(parents=True)
    (tmp_path / "v" / "bin" / "python").symlink_to(sys.executable)

    class R:
        returncode, stderr = 0, ""

        def __init__(self, out):
            self.stdout = out

    why = job_venv_problem(f". {tmp_path}/v/bin/activate", run=lambda cmd: R('[["torch"], "9.27.1"]'))
    assert "lacks torch" in why
    why = job_venv_problem(f". {tmp_path}/v/bin/activate", run=lambda cmd: R('[[], "8.0.0"]'))
    assert "Snakemake 8.0.0" in why and "same version" in why
