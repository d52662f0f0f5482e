#!/usr/bin/env bash
# Issue 20's DI-Net targets on 32×32 colour photos, the harder set beside the digits: a labelled ImageFolder
# of seeded crops of real photos (one class per photo, test crops from a held-out band: see
# benchmarks/protocols/photo_patches.py), one SIREN field per crop at fit-dataset's defaults, then
# benchmarks/dinet_targets.sh on that store (DI-Net, the NUFT baseline and cnn4 with the same steps).
#
#   bash benchmarks/dinet_colour.sh PHOTOS OUT [STEPS] [TRAIN_PER_PHOTO] [TEST_PER_PHOTO]
#   bash benchmarks/dinet_colour.sh '.bench_data/images/natural512/*.png' /tmp/colour 600 500 100
#
# PHOTOS: image files or globs, comma-separated, quoted (one class each). Defaults: 600 steps, 64 training
# and 32 test crops per photo (the 2-core CPU size; see BENCHMARKS.md). Each stage is skipped when its output
# is already there (OUT/patches, a complete OUT/store, OUT/run-<net>), so a run cut short goes on where it
# stopped; an interrupted fit resumes its store. Writes OUT/patches, OUT/store, OUT/fit.txt (fit time and
# `store info`), OUT/run-<net> and OUT/targets-<net>.txt (the eval tables). OUT/patches/crops.csv records each
# crop's position, which `dinet_sweep.py --export OUT/store` turns into the validation band of `--cut band`.
set -euo pipefail
usage="usage: dinet_colour.sh PHOTOS OUT [STEPS] [TRAIN_PER_PHOTO] [TEST_PER_PHOTO]"
photos=${1:?$usage}
out=${2:?$usage}
steps=${3:-600}
train=${4:-64}
test=${5:-32}
here=$(dirname "$0")
mkdir -p "$out"
if [ ! -d "$out/patches" ]; then
    python "$here/protocols/photo_patches.py" --images "$photos" --out "$out/patches" \
        --train-per-photo "$train" --test-per-photo "$test" | tail -n 1
fi
if ! grep -qs '(0 missing)' "$out/fit.txt"; then
    resume=(); [ -d "$out/store" ] && resume=(--resume)
    start=$(date +%s.%N)
    python -m fieldlab fit-dataset "$out/patches" --field siren --out "$out/store" --quiet "${resume[@]}"
    seconds=$(python -c "print(f'{$(date +%s.%N) - $start:.1f}')")
    { echo "fit-dataset siren: $seconds s${resume:+ (resumed)}"; python -m fieldlab store info "$out/store"; } \
        | tee "$out/fit.txt"
fi
bash "$here/dinet_targets.sh" "$out/store" "$out" "$steps"
