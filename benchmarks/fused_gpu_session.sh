#!/usr/bin/env bash
# What issue 8 (fused GPU kernels) still needs from a GPU, in three commands of under 10 minutes each.
# Each writes its logs under $OUT (the device tool's output folder; ./gpu-out elsewhere) and prints their tails.
#
#   bash benchmarks/fused_gpu_session.sh tune     # ~7 min, alone on the GPU: timings
#   bash benchmarks/fused_gpu_session.sh fp32     # ~9 min: fp32 check rows, the single-field check, by hand
#   bash benchmarks/fused_gpu_session.sh tensor   # ~9 min: tf32 and bf16 check rows
#
# `fp32` needs zarr for `fieldlab fit-dataset`. Where the GPU machine lacks it, bring its wheels in .whl/
# (see the device tool's README: zarr, numcodecs, donfig, google-crc32c for the machine's Python).
#
# What to do with the results:
# - tune: `32x2` (the 2-D first layer as broadcast products, `kernels.fused.NARROW_DIMS`) against `32x2w` (the
#   padded tile it replaced); if the tile wins, set NARROW_DIMS = (). `32x2m200` / `32x2m168` cap the
#   registers (the 2x32 kernel then compiles without spills, 5 programs per SM); if a cap wins, make it
#   the 2x32 default. Then the benchmark rows, for BENCHMARKS.md.
# - fp32, tensor: every row of check_fused.py must say `ok`; record the tables in BENCHMARKS.md.
set -u
case "${1:-}" in
tune|fp32|tensor) ;;
*) echo "usage: bash benchmarks/fused_gpu_session.sh tune|fp32|tensor" >&2; exit 2 ;;
esac
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CHECK=tests/gpu/check_fused.py


tails() {
    for f in "$OUT"/*.log; do
        echo "== $f"
        grep -v "Warning\|warn(" "$f" | cut -c1-700 | tail -n 14
    done
}

case "${1:-}" in
tune)
    B=benchmarks/fit_dataset.py
    timeout 150 python3 $B --tune --patches 20000 --sizes 2x32 --tune-grid 32x2,32x2w,32x2m200,32x2m168 \
        --tune-precisions bf16,tf32 > "$OUT/tune_2x32.log" 2>&1
    timeout 100 python3 $B --tune --patches 20000 --sizes 3x64 --tune-grid 32x4,32x4w \
        --tune-precisions bf16,tf32 > "$OUT/tune_3x64.log" 2>&1
    timeout 300 python3 $B --steps 500 --patches 10000 --eager-fields 2000 --chunk 10000 --sizes 2x32,3x64 \
        --variants reference,fused-bf16,fused-tf32,fused-fp32 > "$OUT/rows.log" 2>&1
    tails
    ;;
fp32)
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl && export PYTHONPATH=/tmp/site
    fi
    python3 -m pip install -q --no-deps -e . >/dev/null 2>&1
    T=540
    ( timeout $T python3 $CHECK --configs siren-3x64 --precisions fp32; echo "rc=$?" ) > "$OUT/c64_fp32.log" 2>&1 &
    ( timeout $T python3 $CHECK --configs siren-2x32,gauss-2x64,siren-3x128 --precisions fp32; echo "rc=$?" ) \
        > "$OUT/small_fp32.log" 2>&1 &
    ( timeout $T python3 $CHECK --configs fourier-3x64 --precisions fp32; echo "rc=$?" ) > "$OUT/fourier_fp32.log" 2>&1 &
    ( timeout $T python3 tests/gpu/check_fused_single.py; echo "rc=$?" ) > "$OUT/single.log" 2>&1 &
    ( timeout $T python3 $CHECK --configs siren-3x128 --precisions bf16; echo "rc=$?" ) > "$OUT/c128_bf16.log" 2>&1 &
    HERE=$(mktemp -d)
    ( cd "$HERE" && timeout 200 fieldlab fit-dataset sample:patches:3000 --field siren --out ds2x32 --steps 200
      echo "rc=$? (expect 0; the log line names the fused kernel)"
      timeout 60 fieldlab fit-dataset sample:patches:300 --field siren --hidden-dim 64 --num-layers 4 \
          --kernel fused --out ds4x64 --steps 10
      echo "rc=$? (expect 2 and one line: the 4x64 fp32 step kernel needs more shared memory than allowed)"
      ls ds4x64 2>&1 | head -3 ) > "$OUT/byhand.log" 2>&1 &
    wait
    tails
    ;;
tensor)
    T=560
    ( timeout $T python3 $CHECK --configs siren-3x64 --precisions tf32; echo "rc=$?" ) > "$OUT/c64_tf32.log" 2>&1 &
    ( timeout $T python3 $CHECK --configs siren-3x64 --precisions bf16; echo "rc=$?" ) > "$OUT/c64_bf16.log" 2>&1 &
    ( timeout $T python3 $CHECK --configs siren-2x32,gauss-2x64,siren-3x128 --precisions tf32,bf16; echo "rc=$?" ) \
        > "$OUT/small.log" 2>&1 &
    ( timeout $T python3 $CHECK --configs fourier-3x64 --precisions tf32,bf16; echo "rc=$?" ) > "$OUT/fourier.log" 2>&1 &
    wait
    tails
    ;;
esac
