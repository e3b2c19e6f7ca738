#!/bin/sh
# ctest's dist_train: `dist_train.sh AG MPIRUN ARGS...` runs `ag train --ddp` on 2 processes
# and checks that only rank 0 reports and saves: one header, one accuracy line, one
# checkpoint; then that --bench-steps reports the all-reduce wait. Skipped (77) without
# Debian's dataset-fashion-mnist.
ag=$1
shift
data=/usr/share/datasets/fashion-mnist
[ -d "$data" ] || { echo "skipped: no $data (install dataset-fashion-mnist)"; exit 77; }
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
out=$(timeout 100 "$@" "$ag" train --ddp --limit 1024 --epochs 1 --quiet \
    --save "$dir/ddp.safetensors" 2>&1) || { printf 'ag train --ddp failed:\n%s\n' "$out"; exit 1; }
printf '%s\n' "$out"
for want in 'data parallel: 2 processes' 'test accuracy' 'saved checkpoint'; do
    n=$(printf '%s\n' "$out" | grep -c "$want")
    [ "$n" -eq 1 ] || { echo "want one line with '$want' (rank 0 only), got $n"; exit 1; }
done
[ -s "$dir/ddp.safetensors" ] || { echo "no checkpoint written"; exit 1; }
out=$(timeout 100 "$@" "$ag" train --ddp --bench-steps 5 2>&1) || {
    printf 'ag train --ddp --bench-steps failed:\n%s\n' "$out"
    exit 1
}
printf '%s\n' "$out"
[ "$(printf '%s\n' "$out" | grep -c 'ddp: 2 processes')" -eq 1 ] || exit 1
