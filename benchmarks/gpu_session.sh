#!/usr/bin/env bash
# Issue 16: everything a short GPU session measures, in one run of at most ~9.5 minutes (offline).
#
#   bash benchmarks/gpu_session.sh            # on the GPU machine; results in $OUT (default gpu-session-out)
#   bash benchmarks/gpu_session.sh --dry-run  # on the CPU with every size shrunk: checks that it works
#
# Parts, each under its own time limit taken from what is left of TOTAL_S (default 560 s), so that a slow part
# cannot cost the rest; a part that fails or runs out of time is recorded as such and the next one runs:
#   1. synthetic throughput + bf16 parity: benchmarks/throughput.py --device cuda --parity-steps 1500 (the
#      issue-11 bf16 collapse check on the default GraphNet, fp32 and bf16 from one initialisation);
#   2. a small generated store: hepfm generate pretrain (the 12 processes; a synthetic store if this fails);
#   3. the real trainer (hepfm pretrain: data pipeline, validation, checkpoints) on that store, in memory /
#      streamed / streamed with read-ahead, eager: events/s, time per epoch extrapolated to 1M events, GPU
#      busy fraction (nvidia-smi utilisation sampled every 100 ms): throughput.py --trainer-only;
#   4. eager vs torch.compile events/s at batch 65,536 / 16,384 / 4,096, bf16 then fp32, with compile time and
#      break-even epochs: benchmarks/compile_speed.py (each row saved as it is measured: a cut-short part
#      keeps its rows);
#   5. the real trainer again with --compile.
# The order puts first what the issue needs most, so that running out of time costs the least.
# $OUT gets throughput.json, compile.json, trainer_eager.json, trainer_compiled.json, gpu_session.json (all of
# them plus the environment and each part's exit status and seconds) and gpu_session.log.
# Wheels the machine lacks are installed from .whl/ as benchmarks/study_on_gpu.sh does.
set -uo pipefail
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-gpu-session-out}
TOTAL_S=${TOTAL_S:-$([ $DRY = 1 ] && echo 1800 || echo 560)}  # a loaded CPU is slow: more for the dry run
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_session.log") 2>&1
START=$(date +%s)
WORK=$(mktemp -d /tmp/hepfm-gpu-session.XXXXXX)

if [ $DRY = 0 ] && [ -d .whl ] && [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "wheel install failed: generation may fall back to a synthetic store"
  python3 -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('.whl/pythia8mc-*.whl')[0]); \
z.extractall('/tmp/py8', [n for n in z.namelist() if '/share/Pythia8/' in n])" \
    && export PYTHIA8DATA=$(ls -d /tmp/py8/*/data/share/Pythia8/xmldoc)
  export PYTHONPATH=$PWD/src:/tmp/site
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
CAP_SCALE=1
if [ $DRY = 1 ]; then
  export OMP_NUM_THREADS=1
  CAP_SCALE=${CAP_SCALE_DRY:-6}  # the parts' limits are for a GPU machine
  THROUGHPUT=(--device cpu --quick --threads 1)
  COMPILE=(--device cpu --quick --threads 1)
  GENERATE=(ttbar zjets -n 40 --shard-size 40 -j 1)
  TRAINER=(--device cpu --quick --threads 1 --trainer-batch 64 --trainer-epochs 2)
else
  THROUGHPUT=(--device cuda --parity-steps 1500 --threads 8)
  COMPILE=(--device cuda --batches 65536,16384,4096 --precisions bf16,fp32 --events 262144 --steps 10)
  GENERATE=(pretrain -n 6000 --shard-size 3000 -j "$(nproc)")
  TRAINER=(--device cuda --threads 8 --trainer-batch 16384 --trainer-epochs 3)
fi

declare -A STATUS SECONDS_USED
part() {  # part NAME CAP_S COMMAND...: run with a limit of min(CAP_S, time left - 20 s)
  local name=$1 cap=$2; shift 2
  local left=$((TOTAL_S - ($(date +%s) - START) - 20))
  cap=$((cap * CAP_SCALE))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    echo "== $name: skipped (no time left)"; STATUS[$name]=skipped; SECONDS_USED[$name]=0; return
  fi
  echo "== $name (limit ${limit} s): $*"
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  local rc=$?
  STATUS[$name]=$rc; SECONDS_USED[$name]=$(($(date +%s) - t0))
  echo "== $name: exit $rc after ${SECONDS_USED[$name]} s"
}

python3 - "$OUT/env.json" <<'EOF'
import json, platform, sys, torch
env = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
       "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
       "gpus": torch.cuda.device_count()}
print(env)
json.dump(env, open(sys.argv[1], "w"), indent=2)
EOF
[ $DRY = 0 ] && nvidia-smi -L

part throughput 140 python3 benchmarks/throughput.py "${THROUGHPUT[@]}" --json "$OUT/throughput.json"
part generate 60 python3 -m hepfm generate "${GENERATE[@]}" -o "$WORK/store" --no-progress
STORE=(--trainer-store "$WORK/store")
if [ "${STATUS[generate]}" != 0 ]; then
  echo "generation failed or ran out of time: the trainer runs on a synthetic store"
  STORE=(--trainer-events 50000)
  [ $DRY = 1 ] && STORE=(--trainer-events 300)
fi
part trainer_eager 80 python3 benchmarks/throughput.py --trainer-only "${TRAINER[@]}" "${STORE[@]}" \
  --json "$OUT/trainer_eager.json"
part compile 170 python3 benchmarks/compile_speed.py "${COMPILE[@]}" --json "$OUT/compile.json"
part trainer_compiled 110 python3 benchmarks/throughput.py --trainer-only --compile "${TRAINER[@]}" "${STORE[@]}" \
  --json "$OUT/trainer_compiled.json"

STATUS_JSON=$(for k in "${!STATUS[@]}"; do printf '"%s": {"exit": "%s", "seconds": %s}, ' "$k" "${STATUS[$k]}" \
  "${SECONDS_USED[$k]}"; done)
python3 - "$OUT" "{${STATUS_JSON%, }}" "$DRY" "$(($(date +%s) - START))" <<'EOF'
import json, sys
from pathlib import Path
out, parts, dry, wall = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
def load(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None
res = {"dry_run": dry, "wall_s": wall, "parts": parts, "env": load("env"), "throughput": load("throughput"),
       "compile": load("compile"), "trainer_eager": load("trainer_eager"), "trainer_compiled": load("trainer_compiled")}
(out / "gpu_session.json").write_text(json.dumps(res, indent=2) + "\n")
print(f"\n==== summary ({'DRY RUN on the CPU: sizes shrunk, figures mean nothing' if dry else res['env']['device']}); "
      f"{wall} s")
for k, v in parts.items():
    print(f"  {k}: exit {v['exit']}, {v['seconds']} s")
t = res["throughput"]
if t:
    b = t["bf16_parity"]
    print(f"  bf16 parity ({b['steps']} steps): accuracy fp32 {b['accuracy_fp32']:.4f}, bf16 {b['accuracy_bf16']:.4f}")
    for m in t["models"]:
        print(f"  synthetic {m['model']:<14} {m['precision']}: {m['events_per_s']:,.0f} ev/s (batch {t['batch']})")
for r in (res["compile"] or {}).get("rows", []):
    print(f"  batch {r['batch']:>6} {r['precision']}: eager {r['eager_events_per_s']:,.0f}, compiled "
          f"{r['compiled_events_per_s']:,.0f} ev/s (x{r['ratio']:.2f}), compile {r['compile_s']:.0f} s, "
          f"{r['distinct_shapes']} shapes, break-even {r['break_even_epochs']} epochs of 1M")
for name in ("trainer_eager", "trainer_compiled"):
    for r in (res[name] or {}).get("trainer", {}).get("rows", []):
        busy = "-" if r["gpu_busy_fraction"] is None else f"{r['gpu_busy_fraction']:.0%}"
        print(f"  trainer {r['pipeline']:<20} compile={r['compile']} bf16={r['bf16']} batch {r['batch']}: "
              f"{r['train_events_per_s']:,.0f} ev/s training, {r['wall_events_per_s']:,.0f} wall; "
              f"{r['epoch_s_per_1M_events']:.1f} s per epoch of 1M events; GPU busy {busy}")
EOF
rm -rf "$WORK"
