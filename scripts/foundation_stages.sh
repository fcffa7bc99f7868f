#!/bin/bash
# Stages 2-5 of the foundation-v2 screen (results/foundation-v2/PROTOCOL.md) and then the final model (its ship
# rule and data efficiency), after stage 1, resumable:
#   bash scripts/foundation_stages.sh [SCREEN_DIR] [FIRST]     (default ../screen 2; FIRST: 2, 3, 4, 5 or final)
# For each: restore its committed record, write its configuration from the previous decision if it is not
# committed yet (commit it before reading any number), pretrain and study its candidates (saving the record after
# every study), then summarise; it stops at the first one whose decision is not final. Rerun after any
# interruption; commit configs/foundation-v2 and results/foundation-v2 as they fill.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-../screen}
FIRST=${2:-2}
case "$FIRST" in 2|3|4|5|final) ;; *) echo "FIRST must be 2, 3, 4, 5 or final, not $FIRST" >&2; exit 2 ;; esac
STARTED=""
for STAGE in 2 3 4 5 final; do
  [ "$STAGE" = "$FIRST" ] && STARTED=1
  [ -n "$STARTED" ] || continue
  NAME=$([ "$STAGE" = final ] && echo final || echo "stage$STAGE")
  python scripts/foundation_stages.py restore "$STAGE" --out "$OUT"
  [ -f "configs/foundation-v2/$NAME.yaml" ] || python scripts/foundation_stages.py configure "$STAGE" --out "$OUT"
  python scripts/foundation_stages.py run "$STAGE" --out "$OUT" --jobs 2
  python scripts/foundation_stages.py save "$STAGE" --out "$OUT"
  python scripts/foundation_stages.py summarise "$STAGE" --out "$OUT"
  python -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))['final'] else 1)" \
    "results/foundation-v2/$NAME/decision.json" \
    || { echo "$NAME is not final: see results/foundation-v2/$NAME/summary.md" >&2; exit 1; }
done
