"""Adapter: choose one model's prompts and human references on one dataset."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snakemake.script import snakemake

from entcal.prompt_jobs import select_prompts_file
from entcal.logs import setup_logging

setup_logging(snakemake.log[0], job=snakemake)
select_prompts_file(
    snakemake.params.model_path,
    snakemake.wildcards.model,
    snakemake.input.examples,
    snakemake.output.prompts,
    chat=snakemake.params.chat,
    chat_instruction=snakemake.params.chat_instruction,
    text_rules=snakemake.params.text_rules,
    **snakemake.params.selection,
)
