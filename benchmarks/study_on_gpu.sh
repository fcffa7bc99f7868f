#!/usr/bin/env bash
# Run a study configuration on one GPU machine with many cores, under a time limit, and pack the results.
#
#   bash benchmarks/study_on_gpu.sh CONFIG.yaml STUDY_DIR RESULT.tar.gz [JOBS] [LIMIT_S] [STUDY OPTIONS...]
#
# STUDY OPTIONS go to `hepfm study` as they are, e.g. `--strategy scratch` to run one strategy per GPU session
# (the parts of one study folder can come from different machines: its cells are merged by --report-only).
#
# Steps: generation (all cores) unless STUDY_DIR already holds the stores; then `hepfm study --jobs JOBS`: every
# learning-rate point of every tuning grid, then every seed, as its own process on the shared GPU (the models are
# small, so one process cannot keep the GPU busy: its steps are launch bound). Training runs in fp32 (--no-bf16),
# as on the CPU. With LIMIT_S > 0 the study is stopped after that many seconds (every process of it: the
# parent's workers too); whatever finished is kept, and a rerun resumes. GPU utilisation is sampled every
# second into STUDY_DIR/gpu_utilisation.csv. The tarball holds the study folder without the event stores,
# weights and checkpoints (the report needs only results, scores, latents, histories and tuning files);
# build the report where the stores are: hepfm study CONFIG --out STUDY_DIR --report-only.
# Wheels of packages the machine lacks are installed from $WHEELS (default .whl/) when that folder exists
# (see the device notes in README.md); the Pythia wheel is needed only when events are generated there.
set -uo pipefail
CONFIG=$1; OUT_DIR=$2; TARBALL=$3; JOBS=${4:-16}; LIMIT_S=${5:-0}
shift $(($# < 5 ? $# : 5))
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ] && [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || exit 3
  if ls "$WHEELS"/pythia8mc-*.whl > /dev/null 2>&1; then
    # pip --target drops the wheel's data files, and Pythia needs all of share/Pythia8 (xmldoc, tunes, PDFs):
    # unpack them from the wheel and point Pythia at them.
    python3 -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('$WHEELS/pythia8mc-*.whl')[0]); \
z.extractall('/tmp/py8', [n for n in z.namelist() if '/share/Pythia8/' in n])" || exit 3
    export PYTHIA8DATA=$(ls -d /tmp/py8/*/data/share/Pythia8/xmldoc)
  fi
  export PYTHONPATH=$PWD/src:/tmp/site
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
mkdir -p "$OUT_DIR"
t0=$(date +%s)
python3 -m hepfm study "$CONFIG" --out "$OUT_DIR" --workers "$(nproc)" --no-bf16 --prepare-only --no-progress || exit 4
t1=$(date +%s); echo "prepare: $((t1 - t0)) s"
SAMPLER=
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$OUT_DIR/gpu_utilisation.csv" &
  SAMPLER=$!
fi
# A session of its own, so that the time limit stops the spawned workers with their parent.
setsid python3 -m hepfm study "$CONFIG" --out "$OUT_DIR" --no-bf16 --no-progress --jobs "$JOBS" "$@" \
  > "$OUT_DIR/study.log" 2>&1 &
STUDY=$!
status=
while kill -0 "$STUDY" 2> /dev/null; do
  if [ "$LIMIT_S" -gt 0 ] && [ $(($(date +%s) - t1)) -ge "$LIMIT_S" ]; then
    echo "time limit of $LIMIT_S s reached: stopping the study (a rerun resumes)"
    kill -TERM -- "-$STUDY" 2> /dev/null; sleep 10; kill -KILL -- "-$STUDY" 2> /dev/null
    status=124
    break
  fi
  sleep 2
done
wait "$STUDY"; rc=$?; status=${status:-$rc}
[ -n "$SAMPLER" ] && kill "$SAMPLER" 2> /dev/null
t2=$(date +%s); echo "study: $((t2 - t1)) s (exit status $status)"
tail -n 40 "$OUT_DIR/study.log"
echo "finished cells: $(find "$OUT_DIR/cells" -name result.json 2> /dev/null | wc -l)"
tar -czf "$TARBALL" -C "$(dirname "$OUT_DIR")" --exclude='stores' --exclude='*.safetensors' --exclude='checkpoint.pt' \
  --exclude='tensorboard' "$(basename "$OUT_DIR")"
ls -la "$TARBALL"
exit "$status"
