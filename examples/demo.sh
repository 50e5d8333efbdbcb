#!/usr/bin/env bash
# The pipeline on the bundled examples: conversions (int8 / int16x8 / mixed / rewritten), two
# precision searches (Pareto frontier + plan), a TFLite Micro export, a table of every
# conversion, then the device half (examples/demo_fleet.sh): broker, agents, deploy, bench,
# collect, compare.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
PYTHON=${PYTHON:-python3}
run() { echo "+ $*" >&2; "$@"; }
data() { echo --calib "examples/${1}_calib.npz" --eval "examples/${1}_eval.npz"; }

for model in digits_attention digits_cnn diabetes_regression wine_collapse; do
  for mode in int8 int16x8; do
    # shellcheck disable=SC2046
    run edgeq convert "examples/$model.keras" -o "$OUT/$model-$mode" $(data "$model") \
      --mode "$mode" --json > /dev/null
  done
done
# int8 everywhere except the attention core (scores matmul, softmax, context matmul)
# shellcheck disable=SC2046
run edgeq convert examples/digits_attention.keras -o "$OUT/digits_attention-mixed" \
  $(data digits_attention) --int16 SOFTMAX --int16 BATCH_MATMUL --json > /dev/null
# the collapse example with its input normalisation moved out into preprocessing.json
# shellcheck disable=SC2046
run edgeq convert examples/wine_collapse.keras -o "$OUT/wine_collapse-int8-rewritten" \
  $(data wine_collapse) --rewrite preprocessing --json > /dev/null

echo
# shellcheck disable=SC2046
run edgeq search examples/digits_outlier_mlp.keras -o "$OUT/search-digits_outlier_mlp" \
  $(data digits_outlier_mlp) --metric sqnr
echo
# shellcheck disable=SC2046
run edgeq search examples/digits_attention.keras -o "$OUT/search-digits_attention" \
  $(data digits_attention) --metric sqnr --rewrite all | tail -4
echo
# the chosen digits_attention plan as a TFLite Micro project (C arrays, resolver, measured arena)
run edgeq export micro "$OUT/search-digits_attention/model.tflite" -o "$OUT/micro-digits_attention" \
  --name digits_attention --golden examples/digits_attention_eval.npz
echo
"$PYTHON" examples/demo_table.py "$OUT"
echo
bash examples/demo_fleet.sh "$OUT"
