#!/usr/bin/env bash
# Debian packages the tests need, installed when missing (as root, with apt-get). Called by
# .ci/run and by `make test`; without root it only says what is missing.
#   make, g++, binutils, gcc-arm-none-eabi (+ newlib's libstdc++): `edgeq export micro` compiles
#     its C++ for the host and for Cortex-M4 and reads the objects back with readelf.
#   mosquitto (+ clients): the real MQTT broker the fleet tests start on a free loopback port;
#     mosquitto_passwd for the ACL test, mosquitto_pub/sub for bench/fleet_bench.py.
#   qemu-user-static, debootstrap: the arm64 agent under emulation (.ci/arm64-env.sh).
#   iproute2: `ip netns` for the fleet-in-network-namespaces test.
#   qemu-system-arm: the exported firmware on an emulated Cortex-M4 (mps2-an386), patch: the
#     offline TFLM tree (.ci/tflm-env.sh).
#   postgresql: the real PostgreSQL server the store and rollout tests start (initdb + pg_ctl
#     in a temp dir on a free port, as the unprivileged `postgres` user the package creates).
set -euo pipefail
need=()
command -v make >/dev/null || need+=(make)
command -v g++ >/dev/null || need+=(g++)
command -v readelf >/dev/null || need+=(binutils)
command -v arm-none-eabi-g++ >/dev/null || need+=(gcc-arm-none-eabi binutils-arm-none-eabi)
[ -d /usr/lib/arm-none-eabi/include/c++ ] || need+=(libstdc++-arm-none-eabi-newlib libnewlib-arm-none-eabi)
{ command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || need+=(mosquitto)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v ip >/dev/null || need+=(iproute2)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
command -v patch >/dev/null || need+=(patch)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "system-deps: missing ${need[*]}; install them (as root: .ci/system-deps.sh)" >&2
fi
