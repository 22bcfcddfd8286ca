"""Adapter: sample continuations for one model x dataset x sampler setting."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

sys.path.insert(0, str(Path(snakemake.scriptdir)))
from entcal.jobs import generate_file  # noqa: E402
from entcal.logs import setup_logging  # noqa: E402
from entcal.models import weight_dtype  # noqa: E402
from entcal.runtime import execution  # noqa: E402


def main():
    setup_logging(snakemake.log[0], job=snakemake)
    s, cfg = snakemake.params.setting, snakemake.config  # execution settings come from the config, not params
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
        dtype=weight_dtype(snakemake.params.dtype, snakemake.config["device"]),
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
