#!/usr/bin/env bash
# The checks that need a GPU, in one run (about 6 minutes on one H200): the GPU tests (relevance, tiled
# runs and batched draws equal the CPU's), LRP speed and memory against the gradient pass and zennit, a
# BraTS-size tiled run (whole volume, a 1 GB budget, the default budget) and Monte Carlo draws in batches.
# Usage: benchmarks/device_checks.sh [OUTDIR]   (DEVICE=cuda by default; PYTHON=python3; torch, numpy,
#        scipy, pandas, pytest and this package's other imports importable; the package itself is copied
#        with its sample data into a temporary folder, so no install is needed)
set -uo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-device_checks_out}")"
py="${PYTHON:-python3}"
device="${DEVICE:-cuda}"
pkg="$(mktemp -d)"
trap 'rm -rf "$pkg"' EXIT
mkdir -p "$out"
cp -r src/napari_lrp "$pkg/" && cp -r sample_data "$pkg/napari_lrp/sample_data"
export PYTHONUNBUFFERED=1 PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
(nvidia-smi -L 2>/dev/null; "$py" -c "import torch; print('torch', torch.__version__)") | tee "$out/machine.txt"
step() {  # step NAME COMMAND...: run one check, its output in OUTDIR/NAME.txt, timed
  local name="$1"; shift
  echo "== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$out/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
}
step tests "$py" -m pytest -q -p no:cacheprovider tests/lrp/test_devices.py tests/models/test_devices.py
step tiling "$py" benchmarks/tiling_memory.py --device "$device" --size 4,155,240,240 --no-budget
step uncertainty "$py" benchmarks/uncertainty.py --device "$device"
step lrp_speed "$py" benchmarks/lrp_speed.py --device "$device" --processes 1
