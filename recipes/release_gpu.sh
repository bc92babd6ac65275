#!/usr/bin/env bash
# Release recipe (one GPU machine, ~10 minutes on an H200 with 16 CPU cores): the real-anatomy
# training cohort with clinical image formation -> dual-face and single-face networks + shape models.
#
#   bash recipes/release_gpu.sh RUN_DIR        # then: python -m scripts.release RUN_DIR/... (docs/training.md)
#
# Sizes are environment variables so the same script rehearses on a CPU at toy scale:
#   N_LLP=2 N_FV=1 N_PROC=1 N_OST=1 POSES=2 VAL_POSES=1 EPOCHS=1 WORKERS=2 DEVICE=cpu bash recipes/release_gpu.sh /tmp/rehearsal
set -euo pipefail
RUN=${1:?usage: release_gpu.sh RUN_DIR}
N_LLP=${N_LLP:-160}        # synthetic real-anatomy subjects (training-only PCA of LLP26 subjects 0-16)
N_FV=${N_FV:-160}          # more of them with femurs beyond the training span (--femur_variation 1)
N_PROC=${N_PROC:-48}       # procedural phantoms kept for variety (case_1000 ...)
N_OST=${N_OST:-160}        # more real-anatomy subjects with bone loss drawn 0-1 and partial-volumed cortices (the elderly: faint outlines)
POSES=${POSES:-8}          # radiographs per training subject
VAL_POSES=${VAL_POSES:-10} # radiographs per real validation subject (17-19)
SPACING=${SPACING:-1.5}    # CT voxel size, mm (ground truth comes from the meshes, not the voxels)
EPOCHS=${EPOCHS:-40}
BATCH=${BATCH:-32}
LR=${LR:-0.001}
WORKERS=${WORKERS:-16}
SIM_WORKERS=${SIM_WORKERS:-6}  # simulator processes (each with its own CUDA context)
DEVICE=${DEVICE:-cuda}
PRETRAINED=${PRETRAINED:-models/model.pt}
PRETRAINED_SINGLE=${PRETRAINED_SINGLE:-models/model_single_face.pt}
FEATURES=${FEATURES:-}  # e.g. "[32, 32, 64, 128, 256, 32]": grow both networks from PRETRAINED and PRETRAINED_SINGLE (pretrained_widen), so the baseline keeps the dual-face width; inference.yaml and train.yaml features must then match
PY=${PYTHON:-python}
DEADLINE_S=${DEADLINE_S:-0}  # >0: training stops (keeping its best model so far) this many seconds after the start
mkdir -p "$RUN"
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

stamp "cohorts"
$PY -m scripts.phantom --anatomy llp26 --n "$N_LLP" --out "$RUN/cohort_llp26" --seed 0 --spacing "$SPACING" --workers "$WORKERS"
$PY -m scripts.phantom --anatomy llp26 --n "$N_FV" --start "$N_LLP" --out "$RUN/cohort_femur_variation" --seed 0 --spacing "$SPACING" --workers "$WORKERS" --femur_variation 1
$PY -m scripts.phantom --anatomy llp26 --n "$N_OST" --start $(( N_LLP + N_FV )) --out "$RUN/cohort_osteoporosis" --seed 0 --spacing "$SPACING" --workers "$WORKERS" --osteoporosis 0 1 --partial_volume_cortex
$PY -m scripts.phantom --anatomy procedural --n "$N_PROC" --start 1000 --out "$RUN/cohort_procedural" --seed 0 --spacing "$SPACING" --workers "$WORKERS"
$PY -m scripts.phantom --anatomy llp26 --subjects validation --out "$RUN/validation_subjects" --spacing "$SPACING" --workers 3

stamp "simulation"
for cohort in cohort_llp26 cohort_procedural; do
  $PY -m scripts.simulate --cases "$RUN/$cohort" --out "$RUN/sim" --poses "$POSES" --split training --workers "$SIM_WORKERS" --device "$DEVICE"
done
$PY -m scripts.simulate --cases "$RUN/cohort_femur_variation" --out "$RUN/sim_femur_variation" --poses "$POSES" --seed 3 --split training \
  --workers "$SIM_WORKERS" --device "$DEVICE"
# the procedural phantoms also as plain DRRs (the look of releases up to 0.5.0), and per real-anatomy
# subject one radiograph with its CT cut short below the hips, one with its CT's box also cut at
# its sides (as the shared real CT) and one with a 50% chance of a proximal-femur fracture fixation
# (configs/simulate_fixation.yaml; the shared real CT's left femur holds one)
$PY -m scripts.simulate --cases "$RUN/cohort_procedural" --out "$RUN/sim_plain" --poses "$POSES" --split training \
  --config configs/simulate_plain.yaml --workers "$SIM_WORKERS" --device "$DEVICE"
$PY -m scripts.simulate --cases "$RUN/cohort_llp26" --out "$RUN/sim_ct_end" --poses 1 --seed 1 --split training \
  --config configs/simulate_ct_end.yaml --workers "$SIM_WORKERS" --device "$DEVICE"
$PY -m scripts.simulate --cases "$RUN/cohort_llp26" --out "$RUN/sim_ct_box" --poses 1 --seed 2 --split training \
  --config configs/simulate_ct_box.yaml --workers "$SIM_WORKERS" --device "$DEVICE"
$PY -m scripts.simulate --cases "$RUN/cohort_llp26" --out "$RUN/sim_fixation" --poses 1 --seed 4 --split training \
  --config configs/simulate_fixation.yaml --workers "$SIM_WORKERS" --device "$DEVICE"
$PY -m scripts.simulate --cases "$RUN/cohort_osteoporosis" --out "$RUN/sim_osteoporosis" --poses "$POSES" --seed 5 --split training \
  --workers "$SIM_WORKERS" --device "$DEVICE"
DATA="['$RUN/sim','$RUN/sim_femur_variation','$RUN/sim_plain','$RUN/sim_ct_end','$RUN/sim_ct_box','$RUN/sim_fixation','$RUN/sim_osteoporosis']"
$PY -m scripts.simulate --cases "$RUN/validation_subjects" --out "$RUN/sim" --poses "$VAL_POSES" --split validation --workers 3 --device "$DEVICE"

stamp "training (dual-face and single-face side by side)"
budget=0
if (( DEADLINE_S > 0 )); then budget=$(( DEADLINE_S - SECONDS > 60 ? DEADLINE_S - SECONDS : 60 )); fi
stamp "training budget: ${budget}s (0: until the last epoch)"
train() {  # $1 run folder, $2 pretrained, $3 config files, then extra options
  timeout "$budget" $PY -m monai.bundle run --config_file "$3" --dataset_dir "$DATA" \
    --output_dir "$1" --ckpt_dir "$1" --pretrained "$2" --epochs "$EPOCHS" --batch_size "$BATCH" \
    --learning_rate "$LR" --image_size 128 --num_workers 4 --device "\$torch.device('$DEVICE')" "${@:4}" > "$1.log" 2>&1 || [[ $? == 124 && -f "$1/model.pt" ]]
}
grow=()
if [[ -n "$FEATURES" ]]; then grow=(--features "$FEATURES" --pretrained_widen true); fi
train "$RUN/dual_face" "$PRETRAINED" "['configs/train.yaml']" "${grow[@]}" &
dual=$!
train "$RUN/single_face" "$PRETRAINED_SINGLE" "['configs/train.yaml','configs/variants/single_face.yaml']" "${grow[@]}" &
single=$!
stamp "shape models (the real-anatomy training cohort)"
$PY -m scripts.ssm build --cases "$RUN/cohort_llp26" --out "$RUN/ssm.npz" --variance 0.999 --overwrite  # a rerun replaces its own
wait $dual; wait $single
tail -n 3 "$RUN/dual_face.log" "$RUN/single_face.log"
stamp "done"
