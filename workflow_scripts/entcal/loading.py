"""The configuration as the Snakefile loads it: every check in the order a user's mistake is best named (the YAML
itself, duplicate keys, the schema, the fidelity preset, the revision lock, excluded models, the cross-key checks,
the environment), then the site profile's facts and the canonical key order. ``rules/common.smk`` calls
:func:`load_configuration` once, with Snakemake's ``config``, ``workflow`` and ``logger``."""

from __future__ import annotations

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from entcal.config import apply_revision_lock, canonical, check_config, exclude_models, resolve_fidelity
from entcal.config_files import duplicate_keys, schema_errors, yaml_bounds, yte_templates
from entcal.gguf import gguf_problems
from entcal.logs import progress_problems
from entcal.profile import conda_problem, site_facts


def config_files(workflow, workflow_dir: str) -> list[str]:
    """The files the configuration came from: --configfile, else the configfile: of the Snakefile (this one's, or the
    one of a workflow that uses this one as a module)."""
    return list(workflow.overwrite_configfiles) or list(workflow.configfiles) or [f"{workflow_dir}/config/config.yaml"]


def load_configuration(config: dict, workflow, logger, workflow_dir: str) -> None:
    """Check ``config`` and complete it in place (schema defaults, the fidelity preset's switches, locked revisions,
    the site's facts), in canonical key order; a problem stops the run with a WorkflowError naming it and its fix."""
    files = config_files(workflow, workflow_dir)
    for f in yte_templates(files):
        logger.warning(
            f"{f} is a YTE template (__use_yte__: true): Snakemake ran the Python code in it while loading it, "
            "before this workflow could read it. A configuration file is code to Snakemake: use only ones you "
            "trust (docs/reliability.md)."
        )
    problems = [p for f in files for p in yaml_bounds(f)]
    if problems:  # before anything walks the document
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))
    problems = [p for f in files for p in duplicate_keys(f)]
    if not config.get("results_dir"):
        problems.append(
            f"{', '.join(map(str, files))}: no results_dir. A configuration given with --configfile "
            "replaces the paper grid (it is the default only without --configfile) and names its own results "
            "folder, e.g. results_dir: results/mine"
        )
    schema_file = f"{workflow_dir}/config/schema.yaml"
    with open(schema_file) as fh:
        schema = yaml.safe_load(fh)
    problems += [e for e in schema_errors(config, schema) if "'results_dir' is a required property" not in e]
    if problems:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))
    validate(config, schema_file, set_default=True)
    # the fidelity preset fills every sub-switch left null (entcal.config.FIDELITY); config.effective.yaml records them
    resolved = resolve_fidelity(config)
    for key, (value, how) in resolved.items():
        if how == "configured":
            logger.info(f"{key}: {value} (set in the configuration, over the {config['fidelity']} preset)")
    logger.info(
        f"fidelity {config['fidelity']}: "
        + ", ".join(f"{k} {v}" for k, (v, _) in resolved.items())
        + " (config.effective.yaml records them)"
    )
    if config["revisions_lock"]:
        with open(config["revisions_lock"]) as fh:
            lock = yaml.safe_load(fh) or {}
        for note in apply_revision_lock(config, lock):
            logger.warning(note)
    exclude_models(config)
    check_config(config)
    if why := conda_problem(workflow.deployment_settings.deployment_method):
        raise WorkflowError(why)
    if problems := progress_problems():
        raise WorkflowError("invalid environment:\n  " + "\n  ".join(problems))
    # site facts from the site profile's default-resources (entcal.profile.SITE_FACTS), which a --config on the
    # command line cannot replace; they override the configuration's values of the same keys
    for key, value in site_facts(workflow.resource_settings.default_resources).items():
        if config.get(key) != value:
            logger.info(
                f"{key}: {value} (the site profile's default-resources; the configuration said {config.get(key)})"
            )
        config[key] = value
    # canonical key order (entcal.config.canonical): an equivalent configuration in another key order gives the
    # same params, so it reruns nothing; the order of datasets and models is kept (figure panels and legends)
    ordered = canonical(config, keep=("datasets", "models"))
    config.clear()
    config.update(ordered)
    if missing := gguf_problems(config):
        raise WorkflowError("real models not installed:\n  " + "\n  ".join(missing))
