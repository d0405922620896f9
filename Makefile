# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench-memory bench-cohort bench-regions train-v0.1 bench-simulate bench-predict bench-resample bench-vein bench-designs bench-robust bench-gre train-default train-robust train-v0.3 train-v0.4 train-v0.5 train-v0.6 train-v0.7 train-v0.8 train-v0.9 calibrate-v0.8.1 calibrate-v0.8.2 calibrate-v0.9.1 soup-v0.10 calibrate-v0.10.1 calibrate-v0.10.2 calibrate-v0.8.3 tune-v0.5.2 cv ablate clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	# torch is pinned in the same pip command so that no CUDA build is pulled in.
	$(BIN)/pip install --quiet "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/deepmir demo --out demo_output

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

bench-simulate: $(STAMP)
	$(BIN)/python benchmarks/bench_simulate.py

bench-predict: $(STAMP)
	$(BIN)/python benchmarks/bench_predict.py

bench-resample: $(STAMP)
	$(BIN)/python benchmarks/bench_resample.py

bench-memory: $(STAMP)
	$(BIN)/python benchmarks/bench_memory.py

bench-cohort: $(STAMP)
	$(BIN)/python benchmarks/bench_cohort.py

bench-regions: $(STAMP)
	$(BIN)/python benchmarks/bench_regions.py

bench-vein: $(STAMP)
	$(BIN)/python benchmarks/bench_vein_filter.py --out build/bench-vein

# raw GRE in: QSM/SWI from magnitude + phase vs the truth and the simulator's own images
bench-gre: $(STAMP)
	$(BIN)/python benchmarks/bench_gre.py --n 36 --out build/bench-gre --json benchmarks/results/gre.json

# calibrations fitted before 0.10.2 judged each lesion on the working grid; their
# targets keep doing so, to reproduce them (deepmir calibrate --grid working)
OLD_GRID := --grid working

# The v0.1 recipe (narrow phantom): 24 simulated subjects (seed 1000, never the
# demo's 20211), fixed iteration count (deterministic). Its weights are where the
# robust recipe starts; the shipped model is the robust one (train-default).
TRAIN_DATA ?= build/train-cohort
TRAIN_ITERATIONS ?= 1200
MODELS := src/deepmir/models
V01_MODEL ?= build/models/v0.1

$(TRAIN_DATA)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(TRAIN_DATA) --n 24 --seed 1000 --preset narrow

# post-processing is then chosen on 6 further subjects (seed 1001), never trained on
TUNE_DATA ?= build/tune-cohort

$(TUNE_DATA)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(TUNE_DATA) --n 6 --seed 1001 --preset narrow

$(V01_MODEL)/config.json: $(TRAIN_DATA)/dataset_description.json $(TUNE_DATA)/dataset_description.json
	$(BIN)/deepmir train --data $(TRAIN_DATA) --out $(V01_MODEL) --modalities t2w,swi,qsm \
		--iterations $(TRAIN_ITERATIONS) --val-fraction 0.1 --val-every 500 --seed 0
	$(BIN)/deepmir tune --model $(V01_MODEL) --data $(TUNE_DATA)

train-v0.1: $(V01_MODEL)/config.json

# the shipped model: v0.8.2 (v0.8's weights and post-processing, below, the
# calibration refitted on 120 subjects, one set of maps per input subset),
# copied into the package
train-default: calibrate-v0.8.2
	cp $(V082_MODEL)/model.safetensors $(V082_MODEL)/config.json $(MODELS)/t2w-swi-qsm/

cv: $(TRAIN_DATA)/dataset_description.json
	$(BIN)/deepmir cv --data $(TRAIN_DATA) --folds 4 --out build/cv --iterations $(TRAIN_ITERATIONS)

# The ablation's 5 cross-validations at the full recipe (4 folds, 1200 iterations)
# take about 5 h on 2 cores; the README's table is this reduced run (about 1 h alone).
ABLATE_FOLDS ?= 2
ABLATE_ITERATIONS ?= 600
ablate: $(TRAIN_DATA)/dataset_description.json
	$(BIN)/deepmir ablate --data $(TRAIN_DATA) --folds $(ABLATE_FOLDS) --out build/ablate \
		--iterations $(ABLATE_ITERATIONS) --val-every 300 --seed 0

bench-designs: $(TRAIN_DATA)/dataset_description.json
	$(BIN)/python benchmarks/bench_designs.py --data $(TRAIN_DATA) --iterations 1200 \
		--json benchmarks/results/designs.json

# The robust recipe (issue 10): domain-randomized phantoms (seed 2000), one model for
# every modality subset (modality dropout), fine-tuned from the v0.1 weights (train-v0.1),
# resumable: rerun the same command to continue after --time-budget stops it.
ROBUST_DATA ?= build/robust-train
ROBUST_TUNE ?= build/robust-tune
ROBUST_MODEL ?= build/models/robust
ROBUST_N ?= 64
ROBUST_ITERATIONS ?= 9000
ROBUST_BUDGET_MIN ?= 170
ROBUST_TUNE_N ?= 24

$(ROBUST_DATA)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(ROBUST_DATA) --n $(ROBUST_N) --seed 2000 --preset randomized

$(ROBUST_TUNE)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(ROBUST_TUNE) --n $(ROBUST_TUNE_N) --seed 2001 --preset randomized

train-robust: $(ROBUST_DATA)/dataset_description.json $(ROBUST_TUNE)/dataset_description.json $(V01_MODEL)/config.json
	$(BIN)/deepmir train --data $(ROBUST_DATA) --out $(ROBUST_MODEL) --modalities t2w,swi,qsm \
		--init $(V01_MODEL) --learning-rate 1e-3 --modality-dropout t2w=0.4,qsm=0.25 \
		--iterations $(ROBUST_ITERATIONS) --time-budget $(ROBUST_BUDGET_MIN) --val-every 1500 \
		--val-fraction 0.1 --checkpoint-every 500 --no-post-tuning --seed 0 --resume
	$(BIN)/deepmir tune --model $(ROBUST_MODEL) --data $(ROBUST_TUNE)
	$(BIN)/deepmir calibrate $(OLD_GRID) --model $(ROBUST_MODEL) --data $(ROBUST_TUNE) --out $(ROBUST_MODEL)/calibration

# v0.3 (the shipped model): v0.2's weights trained on twice the subjects (the
# seed-2000 cohort continued: subjects 65-128 in a second folder, pooled with
# --data twice) with mask jitter (a third of the subjects get the mask predict
# derives when a dataset has none), then tuned and calibrated like v0.2.
ROBUST_DATA_B ?= build/robust-train-b
V03_MODEL ?= build/models/v0.3
V03_ITERATIONS ?= 12000
V03_BUDGET_MIN ?= 170

$(ROBUST_DATA_B)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(ROBUST_DATA_B) --n $(ROBUST_N) --first-index $(ROBUST_N) \
		--seed 2000 --preset randomized

train-v0.3: $(ROBUST_DATA)/dataset_description.json $(ROBUST_DATA_B)/dataset_description.json $(ROBUST_TUNE)/dataset_description.json
	test -f $(ROBUST_MODEL)/config.json || $(MAKE) train-robust
	$(BIN)/deepmir train --data $(ROBUST_DATA) --data $(ROBUST_DATA_B) --out $(V03_MODEL) \
		--modalities t2w,swi,qsm --init $(ROBUST_MODEL) --learning-rate 7e-4 \
		--modality-dropout t2w=0.4,qsm=0.25 --mask-jitter 0.33 \
		--iterations $(V03_ITERATIONS) --time-budget $(V03_BUDGET_MIN) --val-every 2000 \
		--val-fraction 0.1 --checkpoint-every 500 --no-post-tuning --seed 0 --resume
	$(BIN)/deepmir tune --model $(V03_MODEL) --data $(ROBUST_TUNE)
	$(BIN)/deepmir calibrate $(OLD_GRID) --model $(V03_MODEL) --data $(ROBUST_TUNE) --out $(V03_MODEL)/calibration

# v0.4: v0.3's weights trained on the same 128 subjects with lesion-balanced
# patch sampling (every lesion as likely a patch centre, whatever its size: the
# 1-2 voxel CMBs that v0.3 misses get as many patches as the largest), then
# tuned like v0.3 with the brain-mask rim rule (calcifications wholly in the
# mask's outer 3 mm dropped), and calibrated on 72 subjects (the tune cohort
# continued to seed-2001 subjects 25-72), each class's map chosen by
# cross-validation (v0.4.1, shipped before v0.5.1: v0.4's weights, this post-processing
# and calibration). Resumable like the others.
ROBUST_TUNE_B ?= build/robust-tune-b

$(ROBUST_TUNE_B)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(ROBUST_TUNE_B) --n 48 --first-index $(ROBUST_TUNE_N) \
		--seed 2001 --preset randomized

# a labelled raw-GRE-only cohort (T2w, brain mask, magnitude + phase per echo;
# the simulator's SWI and QSM files removed): tune and calibrate read it
# through predict's own GRE path (SWI and QSM computed by deepmir), so that the
# shipped post-processing and calibration also fit raw-GRE cohorts
ROBUST_TUNE_GRE ?= build/robust-tune-gre

$(ROBUST_TUNE_GRE)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(ROBUST_TUNE_GRE).tmp --n 24 --first-index 72 \
		--seed 2002 --preset randomized --raw-gre
	rm -f $(ROBUST_TUNE_GRE).tmp/sub-*/anat/sub-*_swi.* $(ROBUST_TUNE_GRE).tmp/sub-*/anat/sub-*_Chimap.*
	rm -rf $(ROBUST_TUNE_GRE) && mv $(ROBUST_TUNE_GRE).tmp $(ROBUST_TUNE_GRE)

# the flags v0.4, v0.5 and v0.6 share: all three modalities with T2w and QSM
# dropped at random, mask jitter, lesion-balanced patches, 10 % validation,
# resumable, post-processing tuned afterwards
ROBUST_FINETUNE := --modalities t2w,swi,qsm --modality-dropout t2w=0.4,qsm=0.25 \
	--mask-jitter 0.33 --lesion-sampling lesion --val-fraction 0.1 --checkpoint-every 500 \
	--no-post-tuning --seed 0 --resume

# post-processing tuned (rim rule 0/0/3 mm) and calibration fitted on the
# pooled cohorts $(2) (TUNE_72: all 72 seed-2001 subjects); $(1) is the model folder
TUNE_72 := --data $(ROBUST_TUNE) --data $(ROBUST_TUNE_B)
define tune_and_calibrate
$(BIN)/deepmir tune --model $(1) $(2) --min-depth-mm 0,0,3
$(BIN)/deepmir calibrate $(OLD_GRID) --model $(1) $(2) --out $(1)/calibration
endef

V04_MODEL ?= build/models/v0.4
V04_ITERATIONS ?= 10000
V04_BUDGET_MIN ?= 170

train-v0.4: $(ROBUST_DATA)/dataset_description.json $(ROBUST_DATA_B)/dataset_description.json $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json
	test -f $(V03_MODEL)/config.json || $(MAKE) train-v0.3
	$(BIN)/deepmir train --data $(ROBUST_DATA) --data $(ROBUST_DATA_B) --out $(V04_MODEL) \
		$(ROBUST_FINETUNE) --init $(V03_MODEL) --learning-rate 5e-4 \
		--iterations $(V04_ITERATIONS) --time-budget $(V04_BUDGET_MIN) --val-every 2000
	$(BIN)/deepmir tune --model $(V04_MODEL) --data $(ROBUST_TUNE) --min-depth-mm 0,0,3
	$(BIN)/deepmir calibrate $(OLD_GRID) --model $(V04_MODEL) --data $(ROBUST_TUNE) --data $(ROBUST_TUNE_B) \
		--out $(V04_MODEL)/calibration

# v0.5.1 (shipped before v0.8): v0.4's weights trained on the same
# 128 subjects with small lesions weighted up in the cross-entropy
# (--lesion-size-floor 8: a 1-voxel CMB counts as much as an 8-voxel one;
# v0.4 scored clearly visible 1-voxel CMBs below 0.01), tuned and calibrated
# on all 72 seed-2001 subjects (v0.5, tuned on 24, lost iron precision).
# Resumable.

V05_MODEL ?= build/models/v0.5
V05_ITERATIONS ?= 6000
V05_BUDGET_MIN ?= 170

train-v0.5: $(ROBUST_DATA)/dataset_description.json $(ROBUST_DATA_B)/dataset_description.json $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json
	test -f $(V04_MODEL)/config.json || $(MAKE) train-v0.4
	$(BIN)/deepmir train --data $(ROBUST_DATA) --data $(ROBUST_DATA_B) --out $(V05_MODEL) \
		$(ROBUST_FINETUNE) --init $(V04_MODEL) --learning-rate 4e-4 --lesion-size-floor 8 \
		--iterations $(V05_ITERATIONS) --time-budget $(V05_BUDGET_MIN) --val-every 1500
	$(call tune_and_calibrate,$(V05_MODEL),$(TUNE_72))

# v0.6 (an experiment): v0.5's weights trained 6000 more iterations with a
# stronger small-lesion weighting (--lesion-size-floor 27: a 1-voxel CMB counts
# as much as a 3x3x3 one), then tuned and calibrated on all 72 seed-2001
# subjects (tuning on 24 chose settings that a 72-subject tuning did not).
V06_MODEL ?= build/models/v0.6
V06_ITERATIONS ?= 6000
V06_BUDGET_MIN ?= 170

train-v0.6: $(ROBUST_DATA)/dataset_description.json $(ROBUST_DATA_B)/dataset_description.json $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json
	test -f $(V05_MODEL)/config.json || $(MAKE) train-v0.5
	$(BIN)/deepmir train --data $(ROBUST_DATA) --data $(ROBUST_DATA_B) --out $(V06_MODEL) \
		$(ROBUST_FINETUNE) --init $(V05_MODEL) --learning-rate 3e-4 --lesion-size-floor 27 \
		--iterations $(V06_ITERATIONS) --time-budget $(V06_BUDGET_MIN) --val-every 1500
	$(call tune_and_calibrate,$(V06_MODEL),$(TUNE_72))

# v0.7: v0.5's weights with a full-resolution head (8 channels, starting at
# zero: --full-resolution-head, deepmir.model.network), trained 4500 more
# iterations on the same 128 subjects: MONAI's U-Net sees nothing at full
# resolution, and v0.5 misses most 1-voxel CMBs, visible ones included, on its
# own training subjects. Tuned and calibrated on all 72 seed-2001 subjects.
V07_MODEL ?= build/models/v0.7
V07_ITERATIONS ?= 4500
V07_BUDGET_MIN ?= 170

train-v0.7: $(ROBUST_DATA)/dataset_description.json $(ROBUST_DATA_B)/dataset_description.json $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json
	test -f $(V05_MODEL)/config.json || $(MAKE) train-v0.5
	$(BIN)/deepmir train --data $(ROBUST_DATA) --data $(ROBUST_DATA_B) --out $(V07_MODEL) \
		$(ROBUST_FINETUNE) --init $(V05_MODEL) --learning-rate 3e-4 --lesion-size-floor 8 \
		--full-resolution-head 8 \
		--iterations $(V07_ITERATIONS) --time-budget $(V07_BUDGET_MIN) --val-every 1500
	$(call tune_and_calibrate,$(V07_MODEL),$(TUNE_72))

# v0.8 (the shipped model, train-default): v0.5's weights trained 4000 more iterations on the same
# 128 subjects with the lesion-level term (--lesion-loss 1, deepmir.training.loss:
# each missed lesion and each false-positive component counts once): v0.5 scores
# visible 1-voxel CMBs near 1e-6, where the voxel losses, averaged over half a
# million voxels, barely push (benchmarks/results/misses_overfit12_*.txt).
# Tuned and calibrated on all 72 seed-2001 subjects.
V08_MODEL ?= build/models/v0.8
V08_ITERATIONS ?= 4000
V08_BUDGET_MIN ?= 170

train-v0.8: $(ROBUST_DATA)/dataset_description.json $(ROBUST_DATA_B)/dataset_description.json $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json
	test -f $(V05_MODEL)/config.json || $(MAKE) train-v0.5
	$(BIN)/deepmir train --data $(ROBUST_DATA) --data $(ROBUST_DATA_B) --out $(V08_MODEL) \
		$(ROBUST_FINETUNE) --init $(V05_MODEL) --learning-rate 3e-4 --lesion-size-floor 8 \
		--lesion-loss 1 \
		--iterations $(V08_ITERATIONS) --time-budget $(V08_BUDGET_MIN) --val-every 1000
	$(call tune_and_calibrate,$(V08_MODEL),$(TUNE_72))

# v0.9: v0.8's weights fine-tuned on a new cohort (80 subjects, seed 2010) at
# batch 8 with v0.8's loss and flags (scripts/train-v0.9.sh). It ran once on a
# GPU (DEVICE=cuda JOBS=16 N_PER_JOB=5 BATCH=8 TRAIN_S=530 LOAD_S=80: a speed
# probe set 1877 iterations, 1843 ran in 304 s; the model records where it ran);
# on the CPU (the tested path) the same recipe runs resumably with
# V09_ITERATIONS (170 min a run: rerun to continue), then it is tuned and calibrated on all 72 seed-2001 subjects.
V09_MODEL ?= build/models/v0.9
V09_ITERATIONS ?= 1877

train-v0.9: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json | $(STAMP)
	PY=$(BIN)/python JOBS=2 N_PER_JOB=40 BATCH=8 ITERATIONS=$(V09_ITERATIONS) TRAIN_S=10200 MODEL=$(V09_MODEL) \
		bash scripts/train-v0.9.sh
	$(call tune_and_calibrate,$(V09_MODEL),$(TUNE_72))

# seed-2001 subjects 73-120: with the 72 they calibrate v0.8.1 and v0.9.1. Two
# folders of 24, as the shipped calibration was fitted: a folder's labels take the
# width of its last index (sub-73 .. sub-96, then sub-097 .. sub-120), and the
# calibration's hold-out split and folds follow the labels
ROBUST_TUNE_C1 ?= build/robust-tune-c1
ROBUST_TUNE_C2 ?= build/robust-tune-c2
TUNE_120 := $(TUNE_72) --data $(ROBUST_TUNE_C1) --data $(ROBUST_TUNE_C2)

$(ROBUST_TUNE_C1)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(ROBUST_TUNE_C1) --n 24 --first-index 72 \
		--seed 2001 --preset randomized

$(ROBUST_TUNE_C2)/dataset_description.json: | $(STAMP)
	$(BIN)/deepmir simulate --out $(ROBUST_TUNE_C2) --n 24 --first-index 96 \
		--seed 2001 --preset randomized

# v0.8.1 (shipped): v0.8's weights and post-processing, the calibration refitted on
# the 120 seed-2001 subjects v0.9.1 uses (benchmarks/results/rule-v0.8.1.md)
V081_MODEL ?= build/models/v0.8.1

calibrate-v0.8.1: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json $(ROBUST_TUNE_C1)/dataset_description.json $(ROBUST_TUNE_C2)/dataset_description.json
	test -f $(V08_MODEL)/config.json || $(MAKE) train-v0.8
	mkdir -p $(V081_MODEL)
	cp $(V08_MODEL)/model.safetensors $(V08_MODEL)/config.json $(V081_MODEL)/
	$(BIN)/deepmir calibrate $(OLD_GRID) --model $(V081_MODEL) $(TUNE_120) --no-subsets \
		--out $(V081_MODEL)/calibration

# v0.8.2: v0.8.1 plus one calibration per served input subset (SWI + QSM,
# T2w + SWI, SWI alone), fitted on the same 120 subjects predicted with the
# absent modalities zeroed (benchmarks/results/rule-v0.8.2.md)
V082_MODEL ?= build/models/v0.8.2

calibrate-v0.8.2: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json $(ROBUST_TUNE_C1)/dataset_description.json $(ROBUST_TUNE_C2)/dataset_description.json
	test -f $(V08_MODEL)/config.json || $(MAKE) train-v0.8
	mkdir -p $(V082_MODEL)
	cp $(V08_MODEL)/model.safetensors $(V08_MODEL)/config.json $(V082_MODEL)/
	$(BIN)/deepmir calibrate $(OLD_GRID) --model $(V082_MODEL) $(TUNE_120) \
		--out $(V082_MODEL)/calibration

# v0.9.1: v0.9's weights and post-processing (the committed
# benchmarks/results/models/v0.9: GPU training is not bit-reproducible), the
# calibration refitted on 120 seed-2001 subjects (the 72 and subjects 73-120,
# never trained, tuned or benchmarked on): v0.9's map of 72 subjects rested on
# 11 false iron deposits (benchmarks/results/rule-v0.9.1.md)
V091_MODEL ?= build/models/v0.9.1

calibrate-v0.9.1: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json $(ROBUST_TUNE_C1)/dataset_description.json $(ROBUST_TUNE_C2)/dataset_description.json
	mkdir -p $(V091_MODEL)
	cp benchmarks/results/models/v0.9/model.safetensors benchmarks/results/models/v0.9/config.json $(V091_MODEL)/
	$(BIN)/deepmir calibrate $(OLD_GRID) --model $(V091_MODEL) $(TUNE_120) --no-subsets \
		--out $(V091_MODEL)/calibration

# v0.10: the uniform average of v0.8's and v0.9's weights (a model soup,
# deepmir average; v0.9 was fine-tuned from v0.8), v0.8's post-processing, the
# calibration fitted as v0.8.2's on the 120 seed-2001 subjects, one map per input
# subset (benchmarks/results/rule-v0.10.md). SOUP_BASE holds v0.8's weights and
# post-processing (the shipped v0.8.2 folder)
V010_MODEL ?= build/models/v0.10
SOUP_BASE ?= $(MODELS)/t2w-swi-qsm

soup-v0.10: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json $(ROBUST_TUNE_C1)/dataset_description.json $(ROBUST_TUNE_C2)/dataset_description.json
	$(BIN)/deepmir average --model $(SOUP_BASE) --model benchmarks/results/models/v0.9 \
		--out $(V010_MODEL)
	$(BIN)/deepmir calibrate $(OLD_GRID) --model $(V010_MODEL) $(TUNE_120) --out $(V010_MODEL)/calibration

# v0.10.1: v0.10's weights and post-processing, calibrated under drift (each of
# the 120 subjects also predicted once with random blur, noise and QSM scale
# error: deepmir calibrate --perturb 1; benchmarks/results/rule-v0.10.1.md)
V0101_MODEL ?= build/models/v0.10.1

calibrate-v0.10.1: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json $(ROBUST_TUNE_C1)/dataset_description.json $(ROBUST_TUNE_C2)/dataset_description.json
	test -f $(V010_MODEL)/config.json || $(MAKE) soup-v0.10
	mkdir -p $(V0101_MODEL)
	cp $(V010_MODEL)/model.safetensors $(V010_MODEL)/config.json $(V0101_MODEL)/
	$(BIN)/deepmir calibrate $(OLD_GRID) --model $(V0101_MODEL) $(TUNE_120) --perturb 1 \
		--out $(V0101_MODEL)/calibration

# v0.10.2: v0.10's weights and post-processing, the calibration refitted by the
# calibrate that scores predict's own lesions on the input grid (before, the
# working grid's: benchmarks/results/rule-v0.10.2.md); same 120 subjects
V0102_MODEL ?= build/models/v0.10.2

calibrate-v0.10.2: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json $(ROBUST_TUNE_C1)/dataset_description.json $(ROBUST_TUNE_C2)/dataset_description.json
	test -f $(V010_MODEL)/config.json || $(MAKE) soup-v0.10
	mkdir -p $(V0102_MODEL)
	cp $(V010_MODEL)/model.safetensors $(V010_MODEL)/config.json $(V0102_MODEL)/
	$(BIN)/deepmir calibrate --model $(V0102_MODEL) $(TUNE_120) --out $(V0102_MODEL)/calibration

# v0.8.3: the v0.8.2 weights and post-processing (the shipped folder, SOUP_BASE:
# v0.8's max_swi_elongation was set in its config by hand), the calibration refitted
# like v0.10.2's (rule-v0.10.2.md: the candidate after v0.10.2 failed (d))
V083_MODEL ?= build/models/v0.8.3

calibrate-v0.8.3: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json $(ROBUST_TUNE_C1)/dataset_description.json $(ROBUST_TUNE_C2)/dataset_description.json
	mkdir -p $(V083_MODEL)
	cp $(SOUP_BASE)/model.safetensors $(SOUP_BASE)/config.json $(V083_MODEL)/
	$(BIN)/deepmir calibrate --model $(V083_MODEL) $(TUNE_120) --out $(V083_MODEL)/calibration

# v0.5.2 (an experiment, not shipped): v0.5's weights, post-processing tuned
# and calibration fitted on the 72 seed-2001 subjects plus the 24 raw-GRE-only
# seed-2002 ones (SWI and QSM computed by deepmir's GRE path)
V052_MODEL ?= build/models/v0.5.2

tune-v0.5.2: $(ROBUST_TUNE)/dataset_description.json $(ROBUST_TUNE_B)/dataset_description.json $(ROBUST_TUNE_GRE)/dataset_description.json
	test -f $(V05_MODEL)/config.json || $(MAKE) train-v0.5
	mkdir -p $(V052_MODEL)
	cp $(V05_MODEL)/model.safetensors $(V05_MODEL)/config.json $(V052_MODEL)/
	$(call tune_and_calibrate,$(V052_MODEL),$(TUNE_72) --data $(ROBUST_TUNE_GRE))

# held-out shifts of docs/robustness.md; ROBUST_BENCH_MODEL=default scores the shipped model
ROBUST_BENCH_MODEL ?= default
ROBUST_BENCH_N ?= 12
bench-robust: $(STAMP)
	$(BIN)/python benchmarks/bench_robust.py --model $(ROBUST_BENCH_MODEL) --n $(ROBUST_BENCH_N) \
		--out build/robust --json benchmarks/results/robust_$(notdir $(ROBUST_BENCH_MODEL)).json

clean:
	rm -rf $(VENV) demo_output build
