#!/usr/bin/env bash
# v0.9 recipe: the shipped v0.8 weights fine-tuned on a NEW randomized cohort
# (seed 2010, never used for tuning or benchmarks) with v0.8's loss and flags,
# at batch 8. Runs on the CPU (the tested path; `make train-v0.9`) or on a GPU
# (DEVICE=cuda). The cohort is simulated by JOBS processes, N_PER_JOB subjects
# each, into $WORK/sim-<j> (subject i of a seed is the same in any run), read by
# JOBS processes, then trained. With ITERATIONS unset on a GPU, a 40-iteration
# speed probe sets them to fill TRAIN_S seconds (the one-cycle schedule must end
# where training ends). Writes $MODEL (safetensors + config.json; the config
# records the device and the iterations).
set -euo pipefail
PY=${PY:-python3}
DEVICE=${DEVICE:-cpu}
JOBS=${JOBS:-2}
N_PER_JOB=${N_PER_JOB:-40}
SEED=${SEED:-2010}
WORK=${WORK:-build/v0.9-work}
MODEL=${MODEL:-build/models/v0.9}
BATCH=${BATCH:-8}
TRAIN_S=${TRAIN_S:-36000}
ITERATIONS=${ITERATIONS:-}
mkdir -p "$WORK"
t0=$(date +%s)

pids=()
for j in $(seq 0 $((JOBS - 1))); do
    if [ ! -f "$WORK/sim-$j/dataset_description.json" ]; then
        rm -rf "$WORK/sim-$j"
        OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $PY -m deepmir.cli simulate --out "$WORK/sim-$j" --n "$N_PER_JOB" \
            --first-index $((j * N_PER_JOB)) --seed "$SEED" --preset randomized \
            >"$WORK/sim-$j.log" 2>&1 &
        pids+=($!)
    fi
done
if [ -z "$ITERATIONS" ] && { [ "$DEVICE" != cpu ] || [ -n "${PROBE:-}" ]; }; then
    ITERATIONS=$($PY - "$DEVICE" "$BATCH" "${PROBE_N:-40}" <<'EOF'
import sys, time
import torch
from deepmir.labels import LABELS
from deepmir.model.checkpoint import load_model
from deepmir.training.loss import segmentation_loss
from deepmir.training.train import train_step
device, batch, n = torch.device(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
torch.backends.cudnn.benchmark = True
net, card = load_model("src/deepmir/models/t2w-swi-qsm")
net.to(device).train()
opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
# v0.8's loss (class weight 10, size floor 8, lesion term 1), as the recipe trains
loss_fn = segmentation_loss(len(LABELS), 10.0, 8, 1.0)
x = torch.randn(batch, len(card.normalization.channels), 64, 64, 64, device=device)
y = torch.zeros(batch, 1, 64, 64, 64, dtype=torch.int64, device=device)
y[:, :, 30:32, 30:32, 30:32] = 1
for _ in range(min(10, n)):
    train_step(net, opt, loss_fn, x, y)
sync()
t = time.perf_counter()
for _ in range(n):
    train_step(net, opt, loss_fn, x, y)
sync()
print(f"{n / (time.perf_counter() - t):.3f}")
EOF
)
    echo "probe: $ITERATIONS it/s at batch $BATCH on $DEVICE" >&2
fi
for p in "${pids[@]}"; do wait "$p"; done
echo "simulated in $(( $(date +%s) - t0 )) s" >&2
# seconds the training loop may take: what is left of TRAIN_S less LOAD_S for
# reading the cohort and saving the model
budget=$(( TRAIN_S - ($(date +%s) - t0) - ${LOAD_S:-90} ))
if [ -z "$ITERATIONS" ]; then
    ITERATIONS=4000
elif [[ "$ITERATIONS" == *.* ]]; then
    # it/s from the probe -> iterations for the budget, 15 % left for the CPU side
    ITERATIONS=$($PY -c "print(max(100, int($ITERATIONS * $budget * 0.85)))")
fi
echo "training $ITERATIONS iterations" >&2
data=()
for j in $(seq 0 $((JOBS - 1))); do data+=(--data "$WORK/sim-$j"); done
$PY -m deepmir.cli train "${data[@]}" --out "$MODEL" --modalities t2w,swi,qsm \
    --modality-dropout t2w=0.4,qsm=0.25 --mask-jitter 0.33 --lesion-sampling lesion \
    --val-fraction 0 --checkpoint-every 500 --no-post-tuning --seed 0 --resume \
    --init default --learning-rate 3e-4 --lesion-size-floor 8 --lesion-loss 1 \
    --batch-size "$BATCH" --iterations "$ITERATIONS" --device "$DEVICE" --workers "$JOBS" \
    --time-budget "$($PY -c "print(max(1.0, $budget / 60))")"
echo "done in $(( $(date +%s) - t0 )) s" >&2
