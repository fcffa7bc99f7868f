#!/bin/bash
# Stages 2-5 of the foundation-v2 screen (results/foundation-v2/PROTOCOL.md), after stage 1, resumable:
#   bash scripts/foundation_stages.sh [SCREEN_DIR] [FIRST_STAGE]     (default ../screen 2; log: SCREEN_DIR/stages.log)
# For each stage: restore its committed record, write its configuration from the previous stage's decision if it
# is not committed yet (commit it before reading any number), pretrain and study its candidates (saving the record
# after every study), then summarise; it stops at the first stage whose decision is not final. Rerun after any
# interruption; commit configs/foundation-v2 and results/foundation-v2/stage* as they fill.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-../screen}
FIRST=${2:-2}
for STAGE in $(seq "$FIRST" 5); do
  python scripts/foundation_stages.py restore "$STAGE" --out "$OUT"
  [ -f "configs/foundation-v2/stage$STAGE.yaml" ] || python scripts/foundation_stages.py configure "$STAGE" --out "$OUT"
  python scripts/foundation_stages.py run "$STAGE" --out "$OUT" --jobs 2
  python scripts/foundation_stages.py save "$STAGE" --out "$OUT"
  python scripts/foundation_stages.py summarise "$STAGE" --out "$OUT"
  python -c "import json, sys; sys.exit(0 if json.load(open('results/foundation-v2/stage$STAGE/decision.json'))['final'] else 1)" \
    || { echo "stage $STAGE is not final: see results/foundation-v2/stage$STAGE/summary.md" >&2; exit 1; }
done
