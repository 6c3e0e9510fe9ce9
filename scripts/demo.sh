#!/usr/bin/env bash
# Install hapexpr (CPU torch first, so pip does not pull a CUDA build), then run the demo:
# simulate 200 people x 10 genes and run every stage with tiny models (about 3 minutes on 2 idle
# cores). Extra arguments go to
# `hapexpr demo` (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e .
hapexpr demo "$@"
