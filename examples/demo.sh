#!/usr/bin/env bash
# The pipeline on the bundled examples: int8, int16x8 and mixed conversions, then a table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
PYTHON=${PYTHON:-python3}
run() { echo "+ $*" >&2; "$@"; }

for model in digits_attention digits_cnn diabetes_regression; do
  for mode in int8 int16x8; do
    run edgeq convert "examples/$model.keras" -o "$OUT/$model-$mode" \
      --calib "examples/${model}_calib.npz" --eval "examples/${model}_eval.npz" \
      --mode "$mode" --json > /dev/null
  done
done
# int8 everywhere except the attention core (scores matmul, softmax, context matmul)
run edgeq convert examples/digits_attention.keras -o "$OUT/digits_attention-mixed" \
  --calib examples/digits_attention_calib.npz --eval examples/digits_attention_eval.npz \
  --int16 SOFTMAX --int16 BATCH_MATMUL
echo
"$PYTHON" examples/demo_table.py "$OUT"
