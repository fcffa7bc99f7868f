#!/bin/bash
# Stage 1 of the foundation-v2 screen (results/foundation-v2/PROTOCOL.md) on a 2-core machine, resumable:
#   bash scripts/foundation_screen.sh [SCREEN_DIR]        (default ../screen; logs in SCREEN_DIR/*.log)
# Restores the committed record, then pretrains the candidates in one single-threaded process while the studies
# run in another (each candidate's once it is pretrained), saving the record after every study, and finally
# applies the decision rule. Commit results/foundation-v2/stage1 as it fills; rerun after any interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-../screen}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one core per process: CPU times comparable between candidates
python scripts/foundation_screen.py restore --out "$OUT"
python scripts/foundation_screen.py pretrain --out "$OUT" >> "$OUT/pretrain.log" 2>&1 &
python scripts/foundation_screen.py study --out "$OUT" --jobs 1 --wait --save >> "$OUT/study.log" 2>&1
wait || echo "the pretrain step failed: see $OUT/pretrain.log" >&2
python scripts/foundation_screen.py save --out "$OUT"
python scripts/foundation_screen.py summarise --out "$OUT"
