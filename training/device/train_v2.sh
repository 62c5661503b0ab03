#!/usr/bin/env bash
# Round-2 training in one GPU call (the `device` tool's H200): blend2flux, the U-Net, then two
# blend2mask2flux heads on the frozen U-Net, all on blends synthesised from a galaxy bank.
#
#   bash training/device/train_v2.sh BANK.npz [RESUME_TAR_PARTS...]
#
# Runs every chain in parallel on the one GPU, prints progress every 30 s, and leaves in $OUT:
# each run's model.keras (<name>.keras), runs_logs.tar.gz (config, run.json, log.csv,
# state.json, loss curves, the chains' logs) and runs_ckpt.tar.gz.part-* (the checkpoints, so
# that a later call resumes with `python -m training resume`: pass the parts back as arguments).
# Time limits (s) per stage come from the environment (defaults fit one 10-minute call).
set -uo pipefail
REPO=$(pwd)
BANK=${1:?usage: train_v2.sh BANK.npz [checkpoint tar parts]}
shift
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
B2F=${B2F:-blend2flux_v2}; UNET=${UNET:-unet_v2}; HEADS=${HEADS:-"blend2mask2flux_v2_h32 blend2mask2flux_v2_h64"}
W_B2F=${W_B2F:-470}; W_UNET=${W_UNET:-230}; W_HEAD=${W_HEAD:-220}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PY -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" || exit 1

if [ $# -gt 0 ]; then  # resume: unpack the checkpoints of an earlier call
  cat "$@" | tar xzf - -C "$WORK" || exit 1
fi

# start_or_resume NAME CONFIG WALL [train args...]
start_or_resume() {
  local name=$1 config=$2 wall=$3; shift 3
  if [ -f "$T/$name/config.json" ]; then
    $PY -m training resume "$T/$name" --backend jax --max-wall-time "$wall" --bank "$BANK"
  else
    $PY -m training train "$config" --bank "$BANK" --run-dir "$T/$name" --backend jax --max-wall-time "$wall" "$@"
  fi
}

( start_or_resume b2f "$B2F" "$W_B2F" ) > "$WORK/logs/b2f.log" 2>&1 &
(
  start_or_resume unet "$UNET" "$W_UNET" || exit 1
  for head in $HEADS; do
    name=$(basename "$head" .json)
    ( start_or_resume "$name" "$head" "$W_HEAD" --set "model.unet_weights=\"$T/unet\"" ) > "$WORK/logs/$name.log" 2>&1 &
  done
  wait
) > "$WORK/logs/unet_chain.log" 2>&1 &

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
  [ -f "$run/model.keras" ] && cp "$run/model.keras" "$OUT/$name.keras"
done
logs=()
for run in runs/*/ runs/*/unet_stage/; do
  for f in config.json run.json log.csv loss_curve.png checkpoints/state.json; do
    [ -f "$run$f" ] && logs+=("$run$f")
  done
done
tar czf "$OUT/runs_logs.tar.gz" "${logs[@]}" logs
tar czf - --exclude='*.png' --exclude='model.keras' runs | split -b 15m - "$OUT/runs_ckpt.tar.gz.part-"
grep -h -E "Traceback|Error" logs/*.log | head -20
ls -la "$OUT"
