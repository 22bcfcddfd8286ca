# Entropy calibration of language models (Cao, Valiant, Liang, NeurIPS 2025): the whole study as one DAG.
#   paper grid:  snakemake --profile slurm                          (config/config.yaml; docs/cluster.md: site profile)
#   CPU demo:    snakemake --cores 2 --configfile config/demo.yaml
# Rules are thin; the computation lives in workflow_scripts/entcal (an importable, tested package).

from snakemake.utils import min_version

min_version("9.0")


# The paper's grid is the default configuration, only when no --configfile is given: a --configfile
# replaces it (a merge would mix the demo's models into the paper's grid) and must name its results_dir.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/generate.smk"
include: "rules/aggregate.smk"
include: "rules/theory.smk"
include: "rules/exact.smk"
include: "rules/quality.smk"
include: "rules/calibration.smk"
include: "rules/plots.smk"


RUN.attach_stage_inputs()  # every rule's rerun flag (input) and code fingerprint (param), here once (entcal.lifecycle)
RUN.check_gpus()  # on a workstation (resources: gpu), every model fits the GPUs it has (entcal.plan.gpu_shortfall)
RUN.check_contexts()  # every model's own context holds its prompts and generation (entcal.plan.context_problems)
RUN.check_provenance()  # where Snakemake has no record of the results: what changed since (entcal.provenance)
RUN.check_records()  # every result against the content of what it was made from (entcal.records)


rule all:
    default_target: True
    input:
        get_final_targets,


# the run's hooks (entcal.lifecycle.Run): a workflow that uses this one as a module calls them from its own
onstart:
    RUN.onstart()  # the results folder's lock, SIGTERM noted, the job environment and damaged inputs checked


onsuccess:
    RUN.onsuccess()  # the provenance marker: this directory's Snakemake records cover the results


onerror:
    RUN.onerror()  # the marker, the tables of the finished jobs, what a SIGTERM means
