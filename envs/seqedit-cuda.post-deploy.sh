#!/usr/bin/env bash
# Run by Snakemake inside the freshly created env, from the working directory (the repository root):
# install the workflow's own package without touching the pinned dependencies.
set -euo pipefail
pip install --no-deps -e .
