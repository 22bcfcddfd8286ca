"""Write the effective configuration (after schema defaults, without execution settings) next to the results,
and provenance.json: its SHA-256 and every stage's code fingerprint (entcal.provenance)."""

import json
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.logs import setup_logging

setup_logging(snakemake.log[0], job=snakemake)
with open(snakemake.output[0], "w") as f:
    yaml.safe_dump(snakemake.params.config, f, sort_keys=False)
with open(snakemake.output.provenance, "w") as f:
    json.dump(snakemake.params.provenance, f, indent=1, default=str)
    f.write("\n")
