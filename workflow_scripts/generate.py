"""Adapter: sample continuations for one model x dataset x sampler setting."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.generation_jobs import generate_file
from entcal.logs import setup_logging
from entcal.models import weight_dtype
from entcal.runtime import execution


def main():
    setup_logging(snakemake.log[0], job=snakemake)
    s, cfg = snakemake.params.setting, snakemake.params.execution  # execution: how, not what (reruns nothing)
    generate_file(
        snakemake.params.model_path,
        snakemake.wildcards.model,
        snakemake.input.prompts,
        snakemake.output.generations,
        sampler=s["sampler"],
        temperature=float(s["temperature"]),
        sampler_param=s.get("param"),
        **snakemake.params.sampling,
        seed=snakemake.params.seed,
        dtype=weight_dtype(snakemake.params.dtype, cfg["device"]),
        precision=snakemake.params.precision,
        meta={"dataset": snakemake.wildcards.dataset, "setting": snakemake.wildcards.setting},
        calibration=snakemake.input.get("calibration"),
        head=snakemake.input.get("head"),
        batch_size=cfg["generation"]["batch_size"],
        shard_size=cfg["generation"]["shard_size"],
        backend=cfg["generation"]["backend"],
        **execution(snakemake),
    )


# vLLM's engine processes start by spawning, which imports this file again: the job runs only as the main script
if __name__ == "__main__":
    main()
