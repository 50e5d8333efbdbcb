#!/usr/bin/env bash
# An arm64 Python that runs the real device agent under QEMU user-mode emulation, no binfmt_misc:
#   DIR/root  Debian bookworm arm64 (debootstrap --foreign, python3 unpacked with dpkg -x)
#   DIR/site  aarch64 wheels of the agent's dependencies (pip --platform, binary only)
# Run as: qemu-aarch64-static -L DIR/root DIR/root/usr/bin/python3.11 (PYTHONPATH=DIR/site:REPO).
# Built once and reused (DIR/.complete); needs debootstrap, qemu-user-static (.ci/system-deps.sh)
# and the network to Debian's mirror and PyPI. Usage: .ci/arm64-env.sh [DIR]
set -euo pipefail
DIR=${1:-${EDGEQ_ARM64_DIR:-$HOME/.cache/edgeq/arm64}}
REPO=$(cd "$(dirname "$0")/.." && pwd)
# the agent's own dependencies, from pyproject's `agent` extra (one list, not two)
mapfile -t DEPS < <(python3 -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["agent"], sep="\n")' "$REPO/pyproject.toml")
SPEC="bookworm python3.11 ${DEPS[*]}"
[ -f "$DIR/.complete" ] && [ "$(cat "$DIR/.complete")" = "$SPEC" ] && { echo "$DIR"; exit 0; }
for tool in debootstrap qemu-aarch64-static; do
  command -v "$tool" >/dev/null || { echo "arm64-env: $tool missing (.ci/system-deps.sh installs it)" >&2; exit 1; }
done
rm -rf "$DIR" && mkdir -p "$DIR"
debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 bookworm "$DIR/root" \
  http://deb.debian.org/debian >"$DIR/debootstrap.log" 2>&1
for deb in "$DIR"/root/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$DIR/root"; done
rm -f "$DIR"/root/var/cache/apt/archives/*.deb
# merged /usr: the loader must resolve inside ROOT, so the link has to be relative
[ -e "$DIR/root/lib/ld-linux-aarch64.so.1" ] || \
  ln -sf ../usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 "$DIR/root/lib/ld-linux-aarch64.so.1"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --target "$DIR/site" \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  --only-binary=:all: --python-version 3.11 --implementation cp \
  "${DEPS[@]}" >"$DIR/pip.log" 2>&1 \
  || { cat "$DIR/pip.log" >&2; exit 1; }
machine=$(qemu-aarch64-static -L "$DIR/root" "$DIR/root/usr/bin/python3.11" -c 'import platform; print(platform.machine())')
[ "$machine" = aarch64 ] || { echo "arm64-env: emulated python says $machine" >&2; exit 1; }
echo "$SPEC" > "$DIR/.complete"
echo "$DIR"
