"""The site profile that ``snakemake --profile slurm`` reads, installed where Snakemake looks for it.

Snakemake resolves a bare profile name in the working directory, then in the user's configuration
folder (``$XDG_CONFIG_HOME/snakemake/``, by default ``~/.config/snakemake/``), then in
``/etc/xdg/snakemake/``. Site settings (executor, account, partitions, the GPU jobs' partition, GPU model, QOS,
constraint and other sbatch arguments, GPU memory, the longest runtime a partition allows, how many jobs at once, how
job states are queried) belong there, in keys that a ``--config`` on the command line does not replace:
``default-resources`` (the facts the rules read travel as ``entcal_*`` resources, :data:`SITE_FACTS`)
and ``set-resources`` of the GPU rules. The workflow's own profile, ``profiles/default/``, which
Snakemake loads by itself, holds neither. Install with::

    python -m entcal.profile install slurm --partition cpu --gpu-partition gpu --account myproj

which writes ``~/.config/snakemake/slurm/config.yaml`` (options left out stay commented, to fill in).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# rules whose jobs run on GPUs (the model jobs and a hub featurizer's): the site's GPU settings go to them
GPU_RULES = ("generate", "score", "score_extra", "calibration_labels", "train_predictor", "mauve_features")
# site facts the workflow's rules read, carried as default resources: the profile's `config:` list would be
# replaced whole by any --config on the command line, default-resources are not
SITE_FACTS = {"entcal_gpu_memory_gb": ("gpu_memory_gb", float), "entcal_max_runtime_min": ("max_runtime_min", int)}

SLURM = """\
# Site profile of the entropy-calibration workflow: `snakemake --profile slurm` reads it from here.
# Written by `python -m entcal.profile install slurm`; fill in what is commented out.
# Everything site-specific is here, in keys that a --config on the command line leaves alone; the
# workflow's own profile (profiles/default/) holds no default-resources or set-resources to replace them.
executor: slurm
# SLURM jobs in flight at once
jobs: {jobs}
# a failed job is retried with more memory and time (never past max_runtime_min)
retries: {retries}
# outputs of a job killed mid-write are redone, never trusted
rerun-incomplete: true
# one failed model does not stop the rest of the grid
keep-going: true
# seconds to wait for outputs to appear on a shared filesystem
latency-wait: {latency_wait}
printshellcmds: true
{deployment}# how job states are queried: sacct needs slurmdbd, squeue works without it
slurm-status-command: {status_command}
{extra}default-resources:
  {partition_line}
  {account_line}
  # site facts the workflow's rules read (entcal.profile.SITE_FACTS):
  # memory of one GPU: the memory plan sizes every batch from it
  entcal_gpu_memory_gb: {gpu_memory_gb}
  # the partitions' time limit (minutes): no job asks for more
  entcal_max_runtime_min: {max_runtime_min}
# GPU jobs: their partition, GPU model, QOS, node constraint and any other sbatch arguments
{gpu_rules}"""


def render_gpu_rules(gpu_partition=None, gpu_model=None, gpu_qos=None, gpu_constraint=None, gpu_sbatch=None) -> str:
    """The ``set-resources`` block of the GPU rules; commented out where nothing is set (Snakemake
    refuses an empty one)."""
    items = [
        ("slurm_partition", gpu_partition),
        ("gpu_model", gpu_model),
        ("qos", gpu_qos),
        ("constraint", gpu_constraint),
        ("slurm_extra", gpu_sbatch),
    ]
    hints = {
        "slurm_partition": "<your GPU partition> (default: slurm_partition)",
        "gpu_model": "h100 (asks --gpus=h100:N)",
        "qos": "<a GPU QOS>",
        "constraint": "<a node feature>",
        "slurm_extra": "\"'--exclusive'\"",
    }
    any_set = any(v for _, v in items)
    c = "" if any_set else "# "
    out = [f"{c}set-resources:\n"]
    for rule in GPU_RULES:
        out.append(f"{c}  {rule}:\n")
        out += [f"{c}    {k}: {_yaml_scalar(v)}\n" for k, v in items if v]
        out += [f"#     {k}: {hints[k]}\n" for k, v in items if not v]
    return "".join(out)


def _yaml_scalar(v) -> str:
    """A resource value as the profile writes it: a string as a quoted Python string literal inside a YAML
    string, since Snakemake evaluates a profile's resource values as Python (a partition named ``all`` or
    ``max`` would otherwise become the builtin function, and ``gpu-a100`` a subtraction); numbers as they are."""
    import json

    return json.dumps(repr(v)) if isinstance(v, str) else str(v)


def site_facts(default_resources) -> dict:
    """The site facts (:data:`SITE_FACTS`) among Snakemake's parsed default resources, under their
    configuration names: ``{"gpu_memory_gb": 80.0, "max_runtime_min": 2880}`` (those present)."""
    out = {}
    items = (
        dict(default_resources.items()) if default_resources is not None and hasattr(default_resources, "items") else {}
    )
    for res, (key, cast) in SITE_FACTS.items():
        if res in items:
            value = getattr(items[res], "value", items[res])
            out[key] = cast(value)
    return out


# Snakemake's shared-filesystem uses (its default), less software deployment: Snakemake then starts each SLURM job
# with the `python` on the job's PATH, not the login node's interpreter, so the environment the precommand activates
# runs the job
JOB_VENV_SHARED_FS = (
    "input-output",
    "persistence",
    "software-deployment-cache",
    "source-cache",
    "sources",
    "storage-local-copies",
)
# what a job environment must hold (import names): Snakemake and its SLURM job step, this workflow's package, the models
JOB_VENV_MODULES = ("snakemake", "snakemake_executor_plugin_slurm_jobstep", "entcal", "torch", "transformers")


def render_deployment(software_deployment: str = "conda", conda_prefix: str | None = None, job_venv=None) -> str:
    """How jobs get their software: each rule's conda environment (envs/*.yaml; the GPU rules' has vLLM and
    the transformers it needs); ``venv``, a second virtual environment that every job activates (sites without
    conda: the GPU set, made by ``VENV=.venv-gpu bash envs/install.sh gpu``); or, with ``none``, the environment
    Snakemake was started from."""
    import json

    prefix = (
        f"conda-prefix: {conda_prefix}\n"
        if conda_prefix
        else "# conda-prefix: <a folder every node sees> (default: .snakemake/conda in the working directory)\n"
    )
    if software_deployment == "conda":
        return (
            "# every rule runs in its own conda environment (envs/*.yaml): GPU jobs get the GPU set (vLLM and its\n"
            "# transformers), analysis jobs the analysis set, whatever the login node has installed\n"
            "software-deployment-method: conda\n" + prefix
        )
    if software_deployment == "venv":
        if not job_venv:
            raise ValueError("--software-deployment venv needs --job-venv <the jobs' virtual environment>")
        venv = os.path.abspath(job_venv)
        return (
            "# no conda: every SLURM job activates this virtual environment (the GPU set with Snakemake and its\n"
            "# job-step plugin: VENV=<it> bash envs/install.sh gpu) before it starts Snakemake; the login node's\n"
            "# .venv keeps the SLURM plugin, whose numpy vLLM does not accept. Software deployment is left off the\n"
            "# shared filesystem, so that Snakemake runs the `python` of the job's PATH (the activated one).\n"
            f"precommand: {json.dumps('. ' + _shell_quote(venv + '/bin/activate'))}\n"
            f"shared-fs-usage: [{', '.join(JOB_VENV_SHARED_FS)}]\n"
        )
    return (
        "# software deployment off: every job runs in the environment snakemake was started from, which must then\n"
        "# hold the GPU set (pip install -r envs/requirements-gpu.txt -c envs/constraints.txt); to turn it on:\n"
        "# software-deployment-method: conda\n"
    )


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def job_venv_of(precommand: str | None) -> str | None:
    """The virtual environment a site profile's precommand activates (``. '<venv>/bin/activate'``), else None."""
    import shlex

    try:
        words = shlex.split(precommand or "")
    except ValueError:
        return None
    if len(words) == 2 and words[0] in (".", "source") and words[1].endswith("/bin/activate"):
        return words[1][: -len("/bin/activate")]
    return None


def job_venv_problem(precommand: str | None, run=None) -> str | None:
    """Where the site profile's precommand activates a job environment: why the jobs could not run in it (missing,
    a package missing, another Snakemake than the login node's), said on the login node before any job is
    submitted; None where it is fit or where no job environment is named."""
    import subprocess
    import sys

    venv = job_venv_of(precommand)
    if venv is None:
        return None
    python = os.path.join(venv, "bin", "python")
    fix = (
        f"make it with `VENV={venv} bash envs/install.sh gpu` (docs/cluster.md, step 1, without conda), or point the "
        "site profile's precommand at the environment that holds the GPU set"
    )
    if not os.access(python, os.X_OK):
        return f"the site profile's precommand activates {venv} for every job, but {python} does not exist: {fix}"
    code = (
        "import importlib.util as u, json; import snakemake as s; "
        f"print(json.dumps([[m for m in {list(JOB_VENV_MODULES)!r} if u.find_spec(m) is None], s.__version__]))"
    )
    run = run or (lambda cmd: subprocess.run(cmd, capture_output=True, text=True, timeout=120))
    r = run([python, "-c", code])
    if r.returncode != 0:
        return f"{python} cannot import snakemake ({r.stderr.strip().splitlines()[-1:]}): {fix}"
    import json

    missing, version = json.loads(r.stdout.strip().splitlines()[-1])
    from snakemake import __version__ as login_version

    if missing:
        return f"the jobs' environment {venv} lacks {', '.join(missing)}: {fix}"
    if version != login_version:
        return (
            f"the jobs' environment {venv} has Snakemake {version}, the login node's {sys.executable} {login_version}: "
            f"a job reads the arguments of the Snakemake that submitted it, so both need the same version ({fix})"
        )
    return None


def conda_problem(deployment_methods, which=None) -> str | None:
    """Why this run cannot start, where it asks for conda (``software-deployment-method: conda``, the site
    profile's default, or ``--sdm conda``) and no ``conda`` is on PATH; None otherwise. Said before Snakemake's
    own bare "Error running conda info"."""
    import shutil

    which = which or shutil.which
    if not any(getattr(m, "name", str(m)).lower() == "conda" for m in deployment_methods or ()):
        return None
    if which("conda"):
        return None
    return (
        "software-deployment-method: conda (a line of the site profile that `python -m entcal.profile install "
        "slurm` writes by default, or --software-deployment-method conda) makes every rule run in its conda "
        "environment (envs/*.yaml), but no `conda` is on PATH. Either install conda on the login node "
        "(Miniforge: conda and mamba; docs/cluster.md, step 1) or run the jobs in a second virtual environment: "
        "make it with `VENV=$PWD/.venv-gpu bash envs/install.sh gpu` and reinstall the profile with "
        "`python -m entcal.profile install slurm --software-deployment venv --job-venv $PWD/.venv-gpu --force` "
        "(docs/cluster.md, step 1, without conda)."
    )


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def render_slurm(
    partition: str | None = None,
    account: str | None = None,
    gpu_partition: str | None = None,
    gpu_model: str | None = None,
    gpu_memory_gb: float = 80,
    max_runtime_min: int = 2880,
    jobs: int = 64,
    retries: int = 2,
    latency_wait: int = 60,
    status_command: str = "sacct",
    extra: dict | None = None,
    gpu_qos: str | None = None,
    gpu_constraint: str | None = None,
    gpu_sbatch: str | None = None,
    software_deployment: str = "conda",
    conda_prefix: str | None = None,
    job_venv: str | None = None,
) -> str:
    """The text of the SLURM site profile."""

    def line(key, value, hint):
        return f"{key}: {_yaml_scalar(value)}" if value else f"# {key}: {hint}"

    extra_text = "".join(f"{k}: {v}\n" for k, v in (extra or {}).items())
    return SLURM.format(
        jobs=jobs,
        retries=retries,
        latency_wait=latency_wait,
        status_command=status_command,
        extra=extra_text,
        partition_line=line(
            "slurm_partition", partition, "<your CPU partition> (default: the cluster's default partition)"
        ),
        account_line=line("slurm_account", account, "<your allocation> (default: the plugin guesses one)"),
        gpu_memory_gb=int(round(gpu_memory_gb)),
        max_runtime_min=int(max_runtime_min),
        gpu_rules=render_gpu_rules(gpu_partition, gpu_model, gpu_qos, gpu_constraint, gpu_sbatch),
        deployment=render_deployment(software_deployment, conda_prefix, job_venv),
    )


def install(name: str = "slurm", force: bool = False, **site) -> Path:
    """Write the site profile ``name`` into the user's Snakemake configuration folder; returns its file."""
    if name != "slurm":
        raise ValueError(f"unknown profile {name!r} (slurm)")
    out = config_home() / "snakemake" / name / "config.yaml"
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: edit it, or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_slurm(**site))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m entcal.profile", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="write the site profile into ~/.config/snakemake/<name>/config.yaml")
    p.add_argument("name", choices=["slurm"])
    p.add_argument("--partition", help="SLURM partition of CPU jobs")
    p.add_argument("--account", help="SLURM account (allocation)")
    p.add_argument("--gpu-partition", help="SLURM partition of GPU jobs (default: --partition)")
    p.add_argument("--gpu-model", help="GPU model to request, e.g. h100 (--gpus=h100:N)")
    p.add_argument("--gpu-qos", help="SLURM QOS of GPU jobs")
    p.add_argument("--gpu-constraint", help="node constraint of GPU jobs (sbatch --constraint)")
    p.add_argument("--gpu-sbatch", help="any other sbatch arguments of GPU jobs, e.g. --gpu-sbatch='--exclusive'")
    p.add_argument("--gpu-memory-gb", type=float, default=80, help="memory of one GPU (GB)")
    p.add_argument("--max-runtime-min", type=int, default=2880, help="the partitions' time limit (minutes)")
    p.add_argument("--jobs", type=int, default=64)
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--latency-wait", type=int, default=60)
    p.add_argument("--status-command", choices=["sacct", "squeue"], default="sacct")
    p.add_argument(
        "--software-deployment",
        choices=["conda", "venv", "none"],
        default="conda",
        help="conda (default): each rule in its envs/*.yaml environment, GPU jobs with vLLM; venv: every job in the "
        "virtual environment --job-venv (sites without conda); none: jobs run in the environment snakemake starts from",
    )
    p.add_argument(
        "--job-venv",
        help="with --software-deployment venv: the jobs' virtual environment, on a folder every node sees "
        "(made by VENV=<it> bash envs/install.sh gpu)",
    )
    p.add_argument("--conda-prefix", help="where the conda environments are built (a folder every node sees)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other Snakemake option for the profile (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing profile")
    a = ap.parse_args(argv)
    if a.software_deployment == "venv" and not a.job_venv:
        ap.error(
            "--software-deployment venv needs --job-venv <the jobs' virtual environment, made by envs/install.sh gpu>"
        )
    extra = dict(kv.split("=", 1) for kv in a.set)
    out = install(
        a.name,
        force=a.force,
        partition=a.partition,
        account=a.account,
        gpu_partition=a.gpu_partition,
        gpu_model=a.gpu_model,
        gpu_memory_gb=a.gpu_memory_gb,
        max_runtime_min=a.max_runtime_min,
        jobs=a.jobs,
        retries=a.retries,
        latency_wait=a.latency_wait,
        status_command=a.status_command,
        extra=extra,
        gpu_qos=a.gpu_qos,
        gpu_constraint=a.gpu_constraint,
        gpu_sbatch=a.gpu_sbatch,
        software_deployment=a.software_deployment,
        conda_prefix=a.conda_prefix,
        job_venv=a.job_venv,
    )
    print(f"wrote {out}; check it, then: snakemake -n --profile {a.name}")


if __name__ == "__main__":  # python -m entcal.profile install slurm ...
    main()
