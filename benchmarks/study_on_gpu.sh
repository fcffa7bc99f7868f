#!/usr/bin/env bash
# Run a study configuration on one GPU machine with many cores, in parallel parts, and pack the results.
#
#   bash benchmarks/study_on_gpu.sh CONFIG.yaml OUT_DIR RESULT.tar.gz [WORKERS]
#
# Steps: generation (WORKERS processes) and pretraining (--prepare-only); then every (task, size, strategy)
# as its own process on the shared GPU (the models are small, so one process cannot keep the GPU busy:
# per-step time is kernel-launch bound); then --report-only. Training
# runs in fp32 (--no-bf16), as on the CPU. The tarball holds the study folder without the event stores and
# the cells' weights (the report needs only results, scores, latents and histories). Wheels of packages the
# machine lacks are installed from .whl/ when that folder exists (see the device notes in README.md).
set -uo pipefail
CONFIG=$1; OUT_DIR=$2; TARBALL=$3; WORKERS=${4:-16}
if [ -d .whl ] && [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 3
  # pip --target drops the wheel's data files, and Pythia needs all of share/Pythia8 (xmldoc, tunes, PDFs):
  # unpack them from the wheel and point Pythia at them.
  python3 -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('.whl/pythia8mc-*.whl')[0]); \
z.extractall('/tmp/py8', [n for n in z.namelist() if '/share/Pythia8/' in n])" || exit 3
  export PYTHIA8DATA=$(ls -d /tmp/py8/*/data/share/Pythia8/xmldoc)
  export PYTHONPATH=$PWD/src:/tmp/site
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
t0=$(date +%s)
python3 -m hepfm study "$CONFIG" --out "$OUT_DIR" --workers "$WORKERS" --no-bf16 --prepare-only --no-progress || exit 4
t1=$(date +%s); echo "prepare: $((t1 - t0)) s"
read -r -a TASKS <<< "$(python3 -c "from hepfm.study.config import load_config as l; print(' '.join(t.name for t in l('$CONFIG').tasks))")"
read -r -a SIZES <<< "$(python3 -c "from hepfm.study.config import load_config as l; print(' '.join(map(str, l('$CONFIG').sizes)))")"
read -r -a STRATEGIES <<< "$(python3 -c "from hepfm.study.config import load_config as l; print(' '.join(l('$CONFIG').strategies))")"
mkdir -p "$OUT_DIR/logs"
pids=()
for task in "${TASKS[@]}"; do
  for size in "${SIZES[@]}"; do
    for strategy in "${STRATEGIES[@]}"; do
      python3 -m hepfm study "$CONFIG" --out "$OUT_DIR" --no-bf16 --no-progress --task "$task" --size "$size" \
        --strategy "$strategy" > "$OUT_DIR/logs/$task-$size-$strategy.log" 2>&1 & pids+=($!)
    done
  done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
t2=$(date +%s); echo "cells: $((t2 - t1)) s (${#pids[@]} processes, exit status $status)"
tail -n 3 "$OUT_DIR"/logs/*.log
python3 -m hepfm study "$CONFIG" --out "$OUT_DIR" --report-only --no-progress > "$OUT_DIR/logs/report.log" 2>&1
echo "report: exit $?"; tail -n 40 "$OUT_DIR/logs/report.log"
t3=$(date +%s); echo "total: $((t3 - t0)) s"
tar -czf "$TARBALL" -C "$(dirname "$OUT_DIR")" --exclude='stores' --exclude='*.safetensors' --exclude='checkpoint.pt' \
  --exclude='tensorboard' "$(basename "$OUT_DIR")"
ls -la "$TARBALL"
exit $status
