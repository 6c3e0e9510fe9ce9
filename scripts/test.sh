#!/usr/bin/env bash
# Install hapexpr with its test and distributed extras (CPU torch first, so pip does not pull a
# CUDA build), lint and format-check with ruff, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,distributed]"
python -m ruff check src tests benchmarks
python -m ruff format --check src tests benchmarks
python -m pytest -q "$@"
