"""`edgeq-agent`: run the device agent (argparse only, so the device install stays light)."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .connection import Broker
from .errors import AgentError
from .power import SOURCES, PowerProbe, probe_registry
from .protocol import check_device_id, check_targeting, parse_tags

if TYPE_CHECKING:
    from .adb import PhoneTarget
from .runtimes import runtime_registry


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeq-agent",
        description="edgeq device agent: receives signed models over MQTT, reports latency, "
                    "power and accuracy. Stops cleanly on SIGINT/SIGTERM.",
        epilog="exit codes: 0 stopped cleanly; 2 bad arguments or unusable key/runtime.")
    p.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument("--device-id", help="this device's id (1-64 of A-Z a-z 0-9 _ . -); with --adb, "
                                        "each phone's id is PREFIX + its model and serial")
    p.add_argument("--data-dir", required=True, type=Path,
                   help="models, spooled results and state live here")
    p.add_argument("--trust-key", required=True, type=Path,
                   help="the host's Ed25519 public key (host.pub from `edgeq keys generate`)")
    p.add_argument("--runtime", default="auto", choices=["auto", *runtime_registry()],
                   help="interpreter (default: first installed of %(choices)s)")
    p.add_argument("--power", default="auto", choices=["auto", *SOURCES, "none"],
                   help="power source (default: first that works)")
    p.add_argument("--sysfs-root", type=Path, default=None,
                   help="read power sensors under this directory instead of /sys (containers "
                        "that mount the host's /sys elsewhere)")
    p.add_argument("--username", help="broker username")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")
    p.add_argument("--tls-ca", type=Path, help="CA certificate for mqtts:// brokers")
    p.add_argument("--keepalive", type=int, default=30, help="MQTT keep-alive seconds (LWT timing)")
    p.add_argument("--max-bundle-mb", type=float, default=256.0,
                   help="largest deploy bundle accepted (default %(default)s MB)")
    p.add_argument("--spool-limit", type=int, default=1000,
                   help="results kept on disk while the broker is unreachable")
    p.add_argument("--transfer-timeout", type=float, default=120.0,
                   help="abort a deploy whose chunks stop arriving for this many seconds")
    p.add_argument("--transfer-deadline", type=float, default=1800.0,
                   help="abort a deploy not complete this many seconds after it started, however "
                        "its chunks trickle (also bounded by the signed manifest's expiry)")
    p.add_argument("--resend-after", type=float, default=60.0,
                   help="resend a result no collector has acknowledged after this many seconds")
    p.add_argument("--child-python", default="",
                   help="command that starts the child interpreter for load checks (default: "
                        "this Python), e.g. 'qemu-aarch64-static -L ROOT ROOT/usr/bin/python3' "
                        "when the agent itself runs under QEMU user emulation")
    p.add_argument("--group", action="append", default=[], metavar="G",
                   help="a fleet group this device is in (repeatable); `edgeq rollout --group G`")
    p.add_argument("--tag", action="append", default=[], metavar="K=V",
                   help="a label in the retained status (repeatable), e.g. --tag site=lab")
    bridge = p.add_argument_group("adb bridge (phones attached to this host)")
    bridge.add_argument("--adb", metavar="SERIAL|all",
                        help="be an agent for each attached phone (`adb devices`): deploys push "
                             "the model, benchmarks run --benchmark-binary on the phone")
    bridge.add_argument("--benchmark-binary", type=Path,
                        help="LiteRT's benchmark_model (or benchmark_litert_model) for the "
                             "phones' ABI, pushed to /data/local/tmp/edgeq")
    bridge.add_argument("--device-prefix", default="phone-", help="device id prefix (%(default)s)")
    bridge.add_argument("--delegate", default="cpu", choices=["cpu", "gpu", "nnapi"])
    bridge.add_argument("--adb-binary", default="adb", help="the adb to run (%(default)s)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--version", action="version", version=f"edgeq-agent {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the agent, serve until a signal."""
    from .agent import Agent, AgentConfig

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                        format="edgeq-agent: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        groups, tags = check_targeting(args.group, parse_tags(args.tag))
        broker = Broker.from_url(args.broker, args.username, args.password_file, args.tls_ca,
                                 args.keepalive)

        def config(device: str, data_dir: Path, phone: PhoneTarget | None = None) -> AgentConfig:
            return AgentConfig(broker, check_device_id(device), data_dir, args.trust_key,
                               args.runtime, args.power, int(args.max_bundle_mb * 2**20),
                               args.spool_limit, args.transfer_timeout,
                               transfer_deadline_s=args.transfer_deadline,
                               resend_after_s=args.resend_after,
                               child_python=tuple(shlex.split(args.child_python)), phone=phone,
                               groups=tuple(groups), tags=tuple(tags.items()))
        if args.adb:
            agents = [Agent(cfg, None) for cfg in _phone_configs(args, config)]
        elif args.device_id:
            agents = [Agent(config(args.device_id, args.data_dir), _probes(args.sysfs_root))]
        else:
            raise AgentError("--device-id is required (or --adb SERIAL|all for phones)")
    except (AgentError, OSError, ValueError) as e:  # bad arguments, key, runtime or data dir
        print(f"edgeq-agent: error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    threads = [threading.Thread(target=a.run, args=(stop,), name=a.device) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


def _phone_configs(args: argparse.Namespace, config: Callable[..., Any]) -> list[Any]:
    """One agent configuration per attached phone (`--adb all`) or for the one serial."""
    from .adb import Adb, PhoneTarget, attached_serials, phone_device_id

    if args.benchmark_binary is None or not args.benchmark_binary.is_file():
        raise AgentError(f"--adb needs --benchmark-binary: LiteRT's benchmark_model built for the "
                         f"phones (not found: {args.benchmark_binary})")
    serials = attached_serials(args.adb_binary) if args.adb == "all" else [args.adb]
    if not serials:
        raise AgentError(f"`{args.adb_binary} devices` lists no phone ready for adb (connected, "
                         "USB debugging allowed?)")
    configs = []
    for serial in serials:
        model = Adb(serial, args.adb_binary).props().get("model", "")
        device = phone_device_id(args.device_prefix, serial, model)
        configs.append(config(device, args.data_dir / device,
                              PhoneTarget(serial, args.benchmark_binary, args.delegate,
                                          args.adb_binary)))
    return configs


def _probes(sysfs_root: Path | None) -> dict[str, Callable[..., PowerProbe]] | None:
    if sysfs_root is None:
        return None
    registry = probe_registry()
    for name, leaf in (("rapl", "class/powercap"), ("hwmon", "class/hwmon"),
                       ("power_supply", "class/power_supply")):
        registry[name] = partial(registry[name], sysfs_root / leaf)
    return registry


if __name__ == "__main__":
    sys.exit(main())
