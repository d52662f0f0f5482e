#!/usr/bin/env bash
# The GPU runs of issues 20 and 25 (no GPU could be had in the sessions of 2026-12-07; the dinet part ran on an
# H100 on 2026-12-08, BENCHMARKS.md). One call on an H100 or H200, from the repository root, as the device tool
# runs it:
#
#   bash benchmarks/gpu_pending.sh [PART ...]      # parts: dinet dinetsplit fitdataset kernel siren hashgrid mesh
#                                                   # (default: all; dinet and dinetsplit take a call each)
#
# Needs (git-ignored, carried to the machine): .whl/ (zarr, numcodecs, donfig, google-crc32c, msgspec, trimesh, av
# wheels: the GPU image lacks them), .bench_data/digits-store (`fieldlab fit-dataset sample:digits --field siren`),
# .bench_data/natural512/ (../shared/data/images/natural512) for the siren part, .bench_data/bunny.obj for the
# mesh part (the armadillo of the target is not in shared/data). Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_pending}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=$PWD/src:/tmp/site
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
parts=${*:-dinet dinetsplit fitdataset kernel siren hashgrid mesh}
nvidia-smi --query-gpu=name --format=csv,noheader
for part in $parts; do
    echo "== $part"
    case $part in
    dinet)  # issue 20: CUDA-graph capture of the separable default and its fused norm; its ratio to cnn4 (≥ 0.5)
        timeout 170 python3 tests/gpu/check_graphed.py 2>&1 | tail -15
        # rounds of 50 steps: with rounds of 20 and more networks in the process the graphed DI-Net rows read
        # 0.49× cnn4 at 16² where rounds of 50 read 0.78× (BENCHMARKS.md, 2026-12-08)
        timeout 300 python3 benchmarks/dinet_speed.py --device cuda --sides 16,32 --steps 50 --rounds 5 --warmup 15 \
            --graphs --plain-norm --variant separable=false,channels=48 --out "$OUT/dinet_speed.json" 2>&1 | tail -16
        for precision in fp32 bf16; do
            /usr/bin/time -f "train $precision: %e s wall" timeout 90 python3 -m fieldlab train .bench_data/digits-store \
                --net dinet --device cuda --precision $precision --out "$OUT/run-$precision" --force --quiet 2>&1 | tail -2
        done ;;
    dinetsplit)  # issue 20: each step's cost per step (launches, point sets) and per field, eager and graphed; the
        # ratio to cnn4 that large batches tend to (on a 2-core AVX-512 CPU: 0.40-0.46, BENCHMARKS.md 2026-12-08)
        timeout 400 python3 benchmarks/dinet_speed.py --device cuda --sides 16,32 --batch 16,64 --steps 50 --rounds 3 \
            --warmup 15 --graphs --out "$OUT/dinet_split.json" 2>&1 | tail -40
        # the same rows in rounds of 20 steps, in the same call: graphed DI-Net read 0.49× cnn4 at 16² in rounds
        # of 20 and 0.75-0.78× in rounds of 50 (two calls, 2026-12-08); both round lengths on one machine say
        # whether the round length is the cause
        timeout 150 python3 benchmarks/dinet_speed.py --device cuda --sides 16 --steps 20 --rounds 3 --warmup 15 \
            --graphs 2>&1 | tail -12 ;;
    fitdataset)  # issue 25: the command, 60,000 patches, 500 steps bf16 (targets ≥ 12,000 and ≥ 3,500 fields/s)
        timeout 400 python3 benchmarks/fit_dataset_command.py --patches 60000 --sizes 2x32,3x64 2>&1 | tail -20 ;;
    kernel)  # issue 25: the step kernel alone (targets ≥ 30,000 fields/s at 2×32 and ≥ 8,800 at 3×64, equal PSNR)
        timeout 300 python3 benchmarks/fit_dataset.py --patches 10000 --sizes 2x32,3x64 2>&1 | tail -20 ;;
    siren)  # issue 25: SIREN 4×256 at 512², against the naive fp32 eager SIREN in the same run (≥ 4× within 0.2 dB)
        python3 benchmarks/fit_images.py --prepare .bench_data/natural512 --data "$OUT/fi" 2>&1 | tail -2
        timeout 400 python3 benchmarks/fit_images.py --data "$OUT/fi" --fields none --natural 0 --naive-images 0 \
            --siren-modes bf16,fp16 --eval-every 50 --params 200000 2>&1 | tail -12 ;;
    hashgrid)  # issue 25: the astronaut to 40 dB, wall time of the command (< 5 s; stop check = metrics.json)
        for i in 1 2; do
            /usr/bin/time -f "%e s wall" python3 -m fieldlab fit sample:astronaut --field hashgrid --target-psnr 40 \
                --steps 2000 --out "$OUT/astro" --force --quiet 2>&1 | tail -2
            python3 -c "import json; m = json.load(open('$OUT/astro/metrics.json')); print(m.get('psnr'), m.get('seconds'))"
        done ;;
    mesh)  # issue 25: occupancy labels at 512³ (< 30 s wall, set on the armadillo)
        [ -f .bench_data/bunny.obj ] && /usr/bin/time -f "%e s wall" python3 -m fieldlab fit .bench_data/bunny.obj \
            --field miner --resolution 512 --precision bf16 --out "$OUT/bunny" --force --quiet 2>&1 | tail -3 ;;
    *) echo "unknown part $part" ;;
    esac
done
