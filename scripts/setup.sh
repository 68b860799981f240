#!/usr/bin/env bash
# Set up napari-lrp on a fresh Debian machine with Python 3.11: the virtual display packages (when
# Xvfb is missing and apt-get is available), a virtual environment in .venv, torch 2.13.0 (the CPU
# build) before anything else can pull a CUDA build, then the project with a Qt binding.
# Usage: scripts/setup.sh          (demo)
#        scripts/setup.sh --test   (also the test tools: pytest, pytest-xvfb, zennit, lxt, Quantus, nilearn)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! command -v Xvfb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxkbcommon-x11-0 \
    libxcb-image0 libxcb-render-util0 libxcb-cursor0 libegl1 libgl1 libfontconfig1 libdbus-1-3 >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {  # quiet pip: its output is shown only when it fails, and then the script fails
  local log status
  log="$(mktemp)"
  set +e
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1
  status=$?
  set -e
  if [ "$status" -ne 0 ]; then
    grep -v "is ignored" "$log" >&2 || true
    echo "scripts/setup.sh: pip install $* failed" >&2
  fi
  rm -f "$log"
  return "$status"
}
pip_install --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  pip_install torch==2.13.0
fi
if [ "${1:-}" = "--test" ]; then
  pip_install -e ".[qt,testing]"
  # nnU-Net v2 itself, the oracle for nnU-Net results folders (its predictor, pre-processing, resampling),
  # with only the dependencies its inference code imports (its own list pulls a CUDA torch and torchvision)
  pip_install --no-deps nnunetv2==2.8.1 acvl-utils==0.2.6 batchgenerators==0.25.5 SimpleITK blosc2 numexpr \
    ndindex httpx
  # zennit (the reference LRP library), zennit-crp (concept relevance, its authors' package) and lxt (AttnLRP's
  # authors' package), test oracles, without their torchvision / transformers dependencies
  pip_install --no-deps zennit zennit-crp==0.6.0 lxt==2.1
  # Quantus (the evaluation metrics' reference implementations) and the OpenCV its perturbations import
  pip_install --no-deps quantus==0.6.0 opencv-python-headless==5.1.0.95
else
  pip_install -e ".[qt]"
fi
# nnU-Net v2 results folders build their networks from dynamic_network_architectures (its timm dependency,
# which pulls torchvision, is needed only by architectures nnU-Net does not plan)
pip_install --no-deps dynamic-network-architectures==0.4.4 einops
.venv/bin/python -c "import napari_lrp, torch; print('napari-lrp', napari_lrp.__version__, 'torch', torch.__version__)"
