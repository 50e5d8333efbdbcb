#!/usr/bin/env bash
# TensorFlow Lite Micro's C++ tree for tests/test_firmware.py, offline: assembled by the vendor
# script this machine image carries (EDGEQ_TFLM_VENDOR, default: the vendor/ directory of the
# shared folder beside the repository), then its libraries built once by TFLM's own Makefile:
# host x86_64 (reference kernels) and Cortex-M4 with CMSIS-NN (~3.5 min each on 2 cores; make
# rebuilds nothing next time). With internet instead: TFLM's own Makefile downloads the same
# third-party trees (`make -f tensorflow/lite/micro/tools/make/Makefile third_party_downloads`).
# Usage: .ci/tflm-env.sh [DIR]   -> prints DIR/tflite-micro
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-${EDGEQ_TFLM_DIR:-$HOME/.cache/edgeq/tflm}}
VENDOR=${EDGEQ_TFLM_VENDOR:-$REPO/../shared/vendor}
[ -f "$VENDOR/tflm-tree.sh" ] || { echo "tflm-env: no $VENDOR/tflm-tree.sh (set EDGEQ_TFLM_VENDOR)" >&2; exit 1; }
tree=$(bash "$VENDOR/tflm-tree.sh" "$DIR" | tail -1)
cd "$tree"
make -f tensorflow/lite/micro/tools/make/Makefile microlite -j"$(nproc)" >"$DIR/host.log" 2>&1 \
  || { tail -20 "$DIR/host.log" >&2; exit 1; }
make -f tensorflow/lite/micro/tools/make/Makefile TARGET=cortex_m_qemu TARGET_ARCH=cortex-m4 \
  OPTIMIZED_KERNEL_DIR=cmsis_nn microlite -j"$(nproc)" >"$DIR/cortex-m4.log" 2>&1 \
  || { tail -20 "$DIR/cortex-m4.log" >&2; exit 1; }
echo "$tree"
