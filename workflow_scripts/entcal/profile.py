"""The site profile that ``snakemake --profile slurm`` reads, installed where Snakemake looks for it.

Snakemake resolves a bare profile name in the working directory, then in the user's configuration
folder (``$XDG_CONFIG_HOME/snakemake/``, by default ``~/.config/snakemake/``), then in
``/etc/xdg/snakemake/``. Site settings (executor, account, partitions, GPU model and memory, the
longest runtime a partition allows, how many jobs at once, how job states are queried) belong there;
per-rule settings that hold on every site are in the workflow's own profile, ``profiles/default/``,
which Snakemake loads by itself. Install with::

    python -m entcal.profile install slurm --partition cpu --gpu-partition gpu --account myproj

which writes ``~/.config/snakemake/slurm/config.yaml`` (options left out stay commented, to fill in).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SLURM = """\
# Site profile of the entropy-calibration workflow: `snakemake --profile slurm` reads it from here.
# Written by `python -m entcal.profile install slurm`; fill in what is commented out.
# Per-rule settings are in the workflow's own profile (profiles/default/), which Snakemake loads by
# itself and which replaces a `set-resources` or `set-threads` block of this file: keep them out of it.
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
# how job states are queried: sacct needs slurmdbd, squeue works without it
slurm-status-command: {status_command}
{extra}default-resources:
  {partition_line}
  {account_line}
# site facts the workflow's rules read
config:
  # memory of one GPU: the memory plan sizes every batch from it
  - gpu_memory_gb={gpu_memory_gb}
  # the partitions' time limit (minutes): no job asks for more
  - max_runtime_min={max_runtime_min}
  {gpu_partition_line}
  {gpu_model_line}
"""


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def render_slurm(partition: str | None = None, account: str | None = None, gpu_partition: str | None = None,
                 gpu_model: str | None = None, gpu_memory_gb: float = 80, max_runtime_min: int = 2880,
                 jobs: int = 64, retries: int = 2, latency_wait: int = 60, status_command: str = "sacct",
                 extra: dict | None = None) -> str:  # fmt: skip
    """The text of the SLURM site profile."""

    def line(key, value, hint):
        return f"{key}: {value}" if value else f"# {key}: {hint}"

    def config_line(key, value, hint):
        return f"- {key}={value}" if value else f"# - {key}={hint}"

    extra_text = "".join(f"{k}: {v}\n" for k, v in (extra or {}).items())
    return SLURM.format(
        jobs=jobs, retries=retries, latency_wait=latency_wait, status_command=status_command, extra=extra_text,
        partition_line=line("slurm_partition", partition, "<your CPU partition> (default: the cluster's default partition)"),
        account_line=line("slurm_account", account, "<your allocation> (default: the plugin guesses one)"),
        gpu_memory_gb=gpu_memory_gb, max_runtime_min=max_runtime_min,
        gpu_partition_line=config_line("gpu_partition", gpu_partition, "<your GPU partition> (default: slurm_partition)"),
        gpu_model_line=config_line("gpu_model", gpu_model, "h100 (asks --gpus=h100:N)"),
    )  # fmt: skip


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
    p.add_argument("--gpu-memory-gb", type=float, default=80, help="memory of one GPU (GB)")
    p.add_argument("--max-runtime-min", type=int, default=2880, help="the partitions' time limit (minutes)")
    p.add_argument("--jobs", type=int, default=64)
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--latency-wait", type=int, default=60)
    p.add_argument("--status-command", choices=["sacct", "squeue"], default="sacct")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other Snakemake option for the profile (repeatable)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing profile")
    a = ap.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in a.set)
    out = install(a.name, force=a.force, partition=a.partition, account=a.account, gpu_partition=a.gpu_partition,
                  gpu_model=a.gpu_model, gpu_memory_gb=a.gpu_memory_gb, max_runtime_min=a.max_runtime_min,
                  jobs=a.jobs, retries=a.retries, latency_wait=a.latency_wait, status_command=a.status_command,
                  extra=extra)  # fmt: skip
    print(f"wrote {out}; check it, then: snakemake -n --profile {a.name}")


if __name__ == "__main__":  # python -m entcal.profile install slurm ...
    main()
