#!/usr/bin/env bash
# Issue 20's "any field" table: train a network on SIREN fields of sample:digits, then evaluate it on stores
# of every other batched architecture fitted to the same digits (one `fieldlab eval` with every store, so
# every row comes from the same run, points and draws).
#
#   bash benchmarks/any_field.sh OUT [NET] [LIMIT] [FIT_STEPS]     # e.g. OUT=/tmp/anyfield dinet 1797 300
#
# FIELDS="siren fourier" limits the architectures (siren first: it is trained on).
# RUN=DIR evaluates an existing run trained on a SIREN store instead of training one (to re-measure
# one row without the training: RUN=../af/run-dinet FIELDS="siren spatial-functa"); the table then
# goes to OUT/eval.*, leaving the run's own eval files alone.
# SEED=K seeds every fit (meta-learning's initialisation, rates and batches too); the held-out digits stay
# every 5th item whatever the seed, so rows of several seeds score the same test fields.
# Writes OUT/digits-<field> stores, OUT/run-<net>, OUT/eval.txt (the printed table) and OUT/eval.json.
# On the GPU image zarr travels as wheels (.whl/, see the device tool's README). No data outside the repo.
set -euo pipefail
out=${1:?usage: any_field.sh OUT [NET] [LIMIT] [FIT_STEPS]}
net=${2:-dinet}
limit=${3:-1797}
steps=${4:-300}
mkdir -p "$out"
fields=(${FIELDS:-siren fourier gauss wire finer hashgrid local-global miner functa spatial-functa})
for field in "${fields[@]}"; do
    start=$(date +%s.%N)
    case $field in  # meta-learned fields take their steps as meta-learning steps
        functa|spatial-functa) fit=(--meta-steps "$steps") ;;
        *) fit=(--steps "$steps" --target-psnr 0) ;;
    esac
    python -m fieldlab fit-dataset sample:digits --field "$field" --limit "$limit" "${fit[@]}" \
        --seed "${SEED:-0}" --out "$out/digits-$field" --force --quiet
    echo "fit-dataset $field: $(python -c "print(f'{$(date +%s.%N) - $start:.1f}')") s"
done
run=${RUN:-$out/run-$net}
if [ -z "${RUN:-}" ]; then
    python -m fieldlab train "$out/digits-siren" --net "$net" --out "$run" --force ${TRAIN_ARGS:-}
fi
stores=()
for field in "${fields[@]}"; do stores+=("$out/digits-$field"); done
python -m fieldlab eval "$run" "${stores[@]}" --points grid,qmc,rqmc,random,shrunk \
    --resolutions 8,16 ${RUN:+--out "$out"} ${EVAL_ARGS:-} | tee "$out/eval.txt"
[ -n "${RUN:-}" ] || cp "$run/eval.json" "$out/eval.json" 2>/dev/null || true
