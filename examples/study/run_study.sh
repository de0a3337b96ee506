#!/usr/bin/env bash
# The whole effect study: build the data, run the four recipes, write EFFECT.md's tables and
# plots. Re-running resumes (finished arm runs are skipped). Usage, from the repository root:
#   examples/study/run_study.sh [path/to/shared/data]
set -euo pipefail
# One thread per process: on a busy 2-core box two OpenMP threads spin-wait for each other
# and train the tiny model about 10x slower than one (11.7k vs 1.0k tokens/s measured).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-.venv/bin/python}"
gristmill="${GRISTMILL:-.venv/bin/gristmill}"
shared="${1:-$here/../../../shared/data}"
"$python" "$here/build_data.py" --shared "$shared" --out "$here/data"
for recipe in study-sst2 finetune-sst2 finetune-alpaca study-agnews; do
  echo "== $recipe $(date -u +%H:%M:%S)"
  "$gristmill" experiment "$here/$recipe.yaml"
done
echo "== done $(date -u +%H:%M:%S)"
"$python" "$here/effect.py"
