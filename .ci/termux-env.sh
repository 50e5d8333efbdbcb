#!/usr/bin/env bash
# A Termux-like agent environment for CI: a venv with tflite-runtime (what Termux packages as
# python-tflite-runtime; ai-edge-litert has no Android wheel), the agent's other dependencies from
# pyproject's `agent-lite` extra, and no ai-edge-litert. tflite-runtime 2.14 is built against
# numpy 1.x, hence numpy<2. Built once and reused (DIR/.complete). Usage: .ci/termux-env.sh [DIR]
set -euo pipefail
DIR=${1:-${EDGEQ_TERMUX_VENV:-$HOME/.cache/edgeq/termux-venv}}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mapfile -t DEPS < <(python3 -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["agent-lite"], sep="\n")' "$REPO/pyproject.toml")
SPEC="tflite-runtime==2.14.0 numpy<2 ${DEPS[*]}"
[ -f "$DIR/.complete" ] && [ "$(cat "$DIR/.complete")" = "$SPEC" ] && { echo "$DIR"; exit 0; }
rm -rf "$DIR"
python3 -m venv "$DIR"
"$DIR/bin/pip" install --quiet --disable-pip-version-check "tflite-runtime==2.14.0" "numpy<2" \
  "${DEPS[@]}" >"$DIR/pip.log" 2>&1 || { cat "$DIR/pip.log" >&2; exit 1; }
"$DIR/bin/python" -c 'import importlib.util, sys, tflite_runtime.interpreter
sys.exit("ai-edge-litert must not be in the Termux-like venv" if importlib.util.find_spec("ai_edge_litert") else 0)'
echo "$SPEC" > "$DIR/.complete"
echo "$DIR"
