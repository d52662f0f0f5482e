#!/usr/bin/env bash
# Issue 20's DI-Net targets on one store: DI-Net, the NUFT baseline and the grid CNN trained with the same
# steps, batch and seed on the store's train split, then one `fieldlab eval` each on the test split at every
# point set and at 8², 16² and 32² (randomized sets: the mean of 5 draws).
#
#   bash benchmarks/dinet_targets.sh STORE OUT [STEPS]      # e.g. after any_field.sh: OUT/digits-siren
#
# Reuses OUT/run-dinet when it exists (any_field.sh trains it with the same defaults). Writes OUT/run-<net>
# and OUT/targets-<net>.txt (the printed tables).
set -euo pipefail
store=${1:?usage: dinet_targets.sh STORE OUT [STEPS]}
out=${2:?usage: dinet_targets.sh STORE OUT [STEPS]}
steps=${3:-600}
mkdir -p "$out"
for net in dinet nuft cnn4; do
    if [ ! -f "$out/run-$net/run.json" ]; then
        extra=(); [ "$net" = nuft ] && extra=(--backend exact)  # exact DFT: no torchkbnufft needed
        python -m fieldlab train "$store" --net "$net" --steps "$steps" --out "$out/run-$net" --force "${extra[@]}"
    fi
    case $net in cnn4) points=grid ;; *) points=grid,qmc,rqmc,random,shrunk ;; esac
    python -m fieldlab eval "$out/run-$net" "$store" --points "$points" --resolutions 8,16,32 \
        | tee "$out/targets-$net.txt"
done
