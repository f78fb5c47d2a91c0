#!/usr/bin/env bash
# The GPU check from the source tree, no install: bash benchmarks/gpu_check.sh --out DIR --data-root DIR [...]
# (benchmarks/gpu_check.py --help lists the options). Python must have torch and the packages its docstring names.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$root/benchmarks/gpu_check.py" "$@"
