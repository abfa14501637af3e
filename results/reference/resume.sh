#!/usr/bin/env bash
# Resume reference grids (README "MNIST and Fashion-MNIST against the papers") with the code they are
# computed with, the commit in results/reference/GRID_CODE, whatever main holds by now. A grid takes
# several sessions on 2 CPU cores, and every finished unit's method_hash covers its method's code, so a
# grid run from main would go stale at each change to that code. This script keeps a clone of this
# repository at GRID_CODE (its own .venv, `make setup`) and runs `bench run` there, writing into this
# checkout's results/reference/<grid>-reference/; commit those folders here as units finish.
#
#   results/reference/resume.sh mnist-nd            # one grid per call; two calls side by side on 2 cores
#   BENCH_GRID_EXECUTOR=ray results/reference/resume.sh fmnist-osr   # both cores on one grid
#
# Grids: mnist-nd fmnist-nd (oe atom aloe rodeo), mnist-osr fmnist-osr (msp energy oe atom aloe rodeo).
# BENCH_DATA / BENCH_CACHE as for bench run (`bench data fetch mnist fmnist` runs first; it is a no-op
# when the converted files are there). BENCH_GRID_DIR: where the clone lives (default under $TMPDIR);
# BENCH_GRID_NICE: the run's niceness (default 10; 19 lets it take only what other work leaves).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
code="$(tr -d '[:space:]' < "$here/results/reference/GRID_CODE")"
[ $# -ge 1 ] || { echo "usage: $0 GRID (accepted: mnist-nd fmnist-nd mnist-osr fmnist-osr)" >&2; exit 2; }
grid="$1"
case "$grid" in
    mnist-nd | fmnist-nd) methods="oe atom aloe rodeo" ;;
    mnist-osr | fmnist-osr) methods="msp energy oe atom aloe rodeo" ;;
    *) echo "$0: unknown grid '$grid'; accepted: mnist-nd fmnist-nd mnist-osr fmnist-osr" >&2; exit 2 ;;
esac
dir="${BENCH_GRID_DIR:-${TMPDIR:-/tmp}/bench-grid-${code:0:12}}"
(
    flock 9  # two calls side by side set the clone up once
    if [ ! -d "$dir/.git" ]; then
        git clone -q --no-checkout "$here" "$dir"
        git -C "$dir" checkout -q --detach "$code"
    fi
    [ "$(git -C "$dir" rev-parse HEAD)" = "$(git -C "$here" rev-parse "$code")" ] ||
        { echo "$0: $dir is not at $code; remove it and rerun" >&2; exit 2; }
    make -C "$dir" --no-print-directory setup
    "$dir/.venv/bin/bench" data fetch mnist fmnist
) 9> "$dir.lock"
cd "$dir"
exec env OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" nice -n "${BENCH_GRID_NICE:-10}" \
    .venv/bin/bench run --methods $methods --protocol "${grid#*-}" --dataset "${grid%-*}" --profile reference \
    --attacks clean pgd aa a3 --out "$here/results/reference/$grid-reference" --rerun-stale \
    --executor "${BENCH_GRID_EXECUTOR:-local}"
