#!/usr/bin/env bash
# Round-2 training in one GPU call (the `device` tool's H200): chains of training runs, all in
# parallel on the one GPU, on blends synthesised from a galaxy bank (training/synth.py).
#
#   bash training/device/train_v2.sh BANK.npz [CHAIN ...]
#
# A CHAIN is STAGE[+STAGE...], run one after the other; a STAGE is NAME:CONFIG:WALL_S[:UNET[:BANK]]
# where UNET (blend2mask2flux only; may be empty) is the run NAME of an earlier stage or @PATH of
# a U-Net .keras, and BANK another bank .npz for this stage (default: the first argument).  Without chains, the first call's plan: blend2flux_v2, and unet_v2 followed by two
# blend2mask2flux heads.  A run folder that exists already is resumed, not restarted.
#
# Leaves in $OUT each run's model.keras as NAME.keras (split in 15 MB parts NAME.keras.part-*
# when larger: `cat NAME.keras.part-* > NAME.keras`) and runs_logs.tar.gz (configs, run.json,
# log.csv, state.json, loss curves, the chains' logs).  What comes back from a call is at most
# 8 files of 16 MiB, 64 MiB together: plan the chains so that their models fit.
set -uo pipefail
REPO=$(pwd)
BANK=${1:?usage: train_v2.sh BANK.npz [CHAIN ...]}
shift
if [ $# -eq 0 ]; then
  set -- "b2f:blend2flux_v2:440" \
         "unet:unet_v2:200+blend2mask2flux_v2_h32:blend2mask2flux_v2_h32:215:unet" \
         "wait_unet+blend2mask2flux_v2_h64:blend2mask2flux_v2_h64:215:unet"
fi
WORK=${BP_WORK:-/tmp/bp}
OUT=${OUT:-$WORK/out}
T=$WORK/runs
mkdir -p "$T" "$WORK/logs" "$OUT"
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ] && [ ! -d /tmp/site/keras ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$REPO/src:$REPO
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PY -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" || exit 1

# stage NAME:CONFIG:WALL[:UNET] -- train (or resume) one run
stage() {
  IFS=: read -r name config wall unet bank <<< "$1"
  bank=${bank:-$BANK}
  if [ "$name" = wait_unet ]; then  # wait for a U-Net that another chain trains
    while [ ! -f "$T/unet/model.keras" ] || ! grep -q '"status": "\(finished\|paused\)"' "$T/unet/run.json" 2>/dev/null; do sleep 5; done
    return 0
  fi
  local extra=()
  if [ -n "${unet:-}" ]; then
    case "$unet" in @*) extra=(--set "model.unet_weights=\"$REPO/${unet#@}\"");; *) extra=(--set "model.unet_weights=\"$T/$unet\"");; esac
  fi
  if [ -f "$T/$name/config.json" ]; then
    $PY -m training resume "$T/$name" --backend jax --max-wall-time "$wall" --bank "$bank"
  else
    $PY -m training train "$config" --bank "$bank" --run-dir "$T/$name" --backend jax --max-wall-time "$wall" "${extra[@]}"
  fi
}

index=0
for chain in "$@"; do
  index=$((index + 1))
  (
    IFS=+ read -ra stages <<< "$chain"
    for spec in "${stages[@]}"; do
      stage "$spec" || exit 1
    done
  ) > "$WORK/logs/chain$index.log" 2>&1 &
done

started=$(date +%s)
while [ -n "$(jobs -rp)" ]; do
  sleep 30
  echo "== $(( $(date +%s) - started )) s: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"
  for log in "$WORK"/logs/*.log; do
    echo "   $(basename "$log" .log): $(grep -E '^epoch|finished|paused|Error|Traceback' "$log" | tail -1)"
  done
done
wait

cd "$WORK"
for run in runs/*/; do
  name=$(basename "$run")
  [ -f "$run/model.keras" ] || continue
  if [ "$(stat -c %s "$run/model.keras")" -gt 15728640 ]; then
    split -b 15m "$run/model.keras" "$OUT/$name.keras.part-"
  else
    cp "$run/model.keras" "$OUT/$name.keras"
  fi
done
logs=()
for run in runs/*/ runs/*/unet_stage/; do
  for f in config.json run.json log.csv loss_curve.png checkpoints/state.json; do
    [ -f "$run$f" ] && logs+=("$run$f")
  done
done
tar czf "$OUT/runs_logs.tar.gz" "${logs[@]}" logs
grep -h -E "Traceback|Error" logs/*.log | head -20
ls -la "$OUT"
