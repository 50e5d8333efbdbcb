#!/usr/bin/env bash
# The device half of the demo: a local mosquitto, two agents (LiteRT "pi" and a microcontroller
# simulated by TFLite Micro), both models of digits_attention (all-int8 and the searched plan)
# deployed, benchmarked and collected, then compared. Needs mosquitto (make demo installs it as
# root). Usage: examples/demo_fleet.sh OUT   (OUT from examples/demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/demo}
PYTHON=${PYTHON:-python3}
run() { echo "+ $*" >&2; "$@"; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ ! -x "$MOSQUITTO" ]; then
  echo "device demo skipped: mosquitto not found (make demo installs it as root; or apt-get install" \
       "mosquitto). edgeq's protocol needs MQTT 5, which Python's embedded brokers (amqtt) lack." >&2
  exit 0
fi
FLEET="$OUT/fleet"
rm -rf "$FLEET" && mkdir -p "$FLEET"
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BROKER="mqtt://127.0.0.1:$PORT"
printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' "$PORT" > "$FLEET/mosquitto.conf"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
"$MOSQUITTO" -c "$FLEET/mosquitto.conf" 2> "$FLEET/mosquitto.log" & pids+=($!)
run edgeq keys generate -o "$FLEET/keys" > /dev/null
for device in demo-pi:litert demo-mcu:tflm; do
  edgeq-agent --broker "$BROKER" --device-id "${device%%:*}" --runtime "${device##*:}" \
    --data-dir "$FLEET/${device%%:*}" --trust-key "$FLEET/keys/host.pub" 2> "$FLEET/${device%%:*}.log" & pids+=($!)
done
edgeq collect --broker "$BROKER" --db "$FLEET/reports.sqlite" 2> "$FLEET/collector.log" & pids+=($!)
for _ in $(seq 1 60); do
  [ "$(edgeq devices --broker "$BROKER" --json | grep -c '"online"')" = 2 ] && break
  sleep 0.5
done
run edgeq devices --broker "$BROKER"
echo
for model in digits_attention-int8 search-digits_attention; do
  for device in demo-pi demo-mcu; do
    run edgeq deploy "$OUT/$model/model.tflite" --device "$device" --broker "$BROKER" \
      --key "$FLEET/keys/host.key" --eval examples/digits_attention_eval.npz --eval-samples 120 \
      --name "$model"
    run edgeq bench --device "$device" --broker "$BROKER" --runs 200 --power-window 0.5
    echo
  done
done
for _ in $(seq 1 40); do
  [ "$("$PYTHON" -c "import sqlite3; print(sqlite3.connect('$FLEET/reports.sqlite').execute('select count(*) from reports').fetchone()[0])" 2>/dev/null)" = 4 ] && break
  sleep 0.25
done
run edgeq reports --db "$FLEET/reports.sqlite" --plot "$FLEET/compare.png"
echo "Pareto plot of the search: $OUT/search-digits_attention/pareto.png"
