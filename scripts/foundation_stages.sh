#!/bin/bash
# Stages 2-5 of the foundation-v2 screen (results/foundation-v2/PROTOCOL.md) and then the final model (its ship
# rule and data efficiency), after stage 1, resumable:
#   bash scripts/foundation_stages.sh [SCREEN_DIR] [FIRST]     (default ../screen 2; FIRST: 2, 3, 4, 5 or final)
# For each not yet decided: restore the committed records (stage 1's and every stage's up to it), write its
# configuration from the previous decision if there is none and commit it (a config not committed as it is stops
# the chain), pretrain and study its candidates (saving the record after every study), then summarise; it stops at
# the first one whose decision is not final. Rerun after any interruption; commit results/foundation-v2 as it fills.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-../screen}
FIRST=${2:-2}
case "$FIRST" in 2|3|4|5|final) ;; *) echo "FIRST must be 2, 3, 4, 5 or final, not $FIRST" >&2; exit 2 ;; esac
final() { python -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))['final'] else 1)" "$1"; }
STARTED=""
for STAGE in 2 3 4 5 final; do
  [ "$STAGE" = "$FIRST" ] && STARTED=1
  [ -n "$STARTED" ] || continue
  NAME=$([ "$STAGE" = final ] && echo final || echo "stage$STAGE")
  DECISION="results/foundation-v2/$NAME/decision.json"
  CONFIG="configs/foundation-v2/$NAME.yaml"
  if [ -f "$DECISION" ] && final "$DECISION"; then
    echo "$NAME is decided ($DECISION): not summarised again"; continue  # later stages were configured from it
  fi
  python scripts/foundation_stages.py restore "$STAGE" --out "$OUT"  # stage 1 and every stage up to this one
  if [ ! -f "$CONFIG" ]; then  # written from the previous decision and committed before any of its numbers exist
    python scripts/foundation_stages.py configure "$STAGE" --out "$OUT"
    git add "$CONFIG" && git commit -q -m "foundation-v2: $NAME configured from the previous decision" -- "$CONFIG"
  fi
  git ls-files --error-unmatch "$CONFIG" > /dev/null && git diff --quiet HEAD -- "$CONFIG" \
    || { echo "$CONFIG is not committed as it is: commit it before the stage runs" >&2; exit 2; }
  python scripts/foundation_stages.py run "$STAGE" --out "$OUT" --jobs 2
  python scripts/foundation_stages.py save "$STAGE" --out "$OUT"
  python scripts/foundation_stages.py summarise "$STAGE" --out "$OUT"
  final "$DECISION" || { echo "$NAME is not final: see results/foundation-v2/$NAME/summary.md" >&2; exit 1; }
done
