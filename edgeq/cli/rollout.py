"""`edgeq rollout`: staged rollouts to device groups, their state, and pins (thin click layer over
edgeq.fleet.rollout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from edgeq.cli.commands import _broker, _broker_options, _db_option, _finite, _tags, _targeting, cli
from edgeq.errors import InputError


class _RolloutGroup(click.Group):
    """`edgeq rollout MODEL ...` starts one; `edgeq rollout status|resume|abort|list|pin|unpin`
    are subcommands (a first argument that is no subcommand is the model of `start`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@cli.group("rollout", cls=_RolloutGroup)
def rollout_group() -> None:
    """Staged rollouts to a device group: canary, waves, health gates, automatic rollback.

    \b
    edgeq rollout MODEL --group G --broker B --key K --db DB [options]   start one
    edgeq rollout status|resume|abort ID --db DB [...]                 one rollout
    edgeq rollout list --db DB                                          every rollout
    edgeq rollout pin|unpin (--device D | --group G) --db DB            hold devices back
    """


def _rate(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        rate = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise click.BadParameter(f"'{value}' is not a rate: use P% (0-100%) or a fraction 0-1")
    return rate


_key_option = click.option("--key", required=True, type=click.Path(path_type=Path),
                           help="Signing key (host.key from `edgeq keys generate`).")


@rollout_group.command("start")
@click.argument("model", type=click.Path(path_type=Path))
@_broker_options
@_key_option
@_db_option
@_targeting
@click.option("--canary", default="5%", show_default=True, metavar="N|P%",
              help="The first wave: N devices or P% of the targeted ones (at least 1).")
@click.option("--waves", type=click.FloatRange(1, 1000), default=4.0, show_default=True,
              callback=_finite, metavar="F", help="Each later wave is F times the one before.")
@click.option("--max-failure-rate", default="5%", show_default=True, callback=_rate,
              metavar="P%", help="Halt when more than this share of finished devices failed "
                                 "(deploy, load check or benchmark).")
@click.option("--min-sample", type=click.IntRange(1), default=1, show_default=True,
              help="Judge the failure rate only once this many devices have finished.")
@click.option("--gate", "gates", multiple=True, metavar="GATE",
              help="Health gate, repeatable: p95-latency<=X% (regression vs the device's "
                   "previous model), task>=Y, agreement>=Y (needs --eval).")
@click.option("--timeout", type=click.FloatRange(1, 7200), default=120.0, show_default=True,
              callback=_finite, help="Seconds each step (deploy, benchmark, rollback) may take.")
@click.option("--eval", "eval_", type=click.Path(path_type=Path),
              help="eval.npz shipped with the model (for the task and agreement gates).")
@click.option("--eval-samples", type=click.IntRange(0), default=0, show_default=True)
@click.option("--name", help="Model name on the devices (default: from the path).")
@click.option("--bench-runs", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="Timed runs of each gate benchmark.")
@click.option("--json", "as_json", is_flag=True, help="Print the rollout report as JSON.")
def start_cmd(model: Path, broker: str, username: str | None, password_file: Path | None,
              tls_ca: Path | None, key: Path, db: str, group: str | None, tags: tuple[str, ...],
              canary: str, waves: float, max_failure_rate: float, min_sample: int,
              gates: tuple[str, ...], timeout: float, eval_: Path | None, eval_samples: int,
              name: str | None, bench_runs: int, as_json: bool) -> None:
    """Roll MODEL out to every device of --group/--tag in waves; halt and roll back on the
    first breached gate.

    Exit 0 done (or devices pending: listed); 1 halted by a gate (touched devices rolled
    back); 2 bad input; 3 broker unreachable."""
    from edgeq.fleet.rollout import Gate, RolloutConfig, start_rollout

    cfg = RolloutConfig(model, _broker(broker, username, password_file, tls_ca), key, db, group,
                        _tags(tags), canary, waves, max_failure_rate, min_sample,
                        tuple(Gate.parse(g) for g in gates), timeout, eval_, eval_samples, name,
                        bench_runs, show_progress=not as_json)
    _finish(start_rollout(cfg), as_json)


def _finish(report: Any, as_json: bool) -> None:
    from edgeq.cli.render import rollout_summary

    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else rollout_summary(report))
    sys.exit(1 if report.state == "halted" else 0)


@rollout_group.command("status")
@click.argument("rollout_id")
@_db_option
@click.option("--json", "as_json", is_flag=True)
def status_cmd(rollout_id: str, db: str, as_json: bool) -> None:
    """A rollout's state and every device's place in it."""
    from edgeq.cli.render import rollout_summary
    from edgeq.fleet.rollout import rollout_status

    report = rollout_status(rollout_id, db)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else
               rollout_summary(report, every_device=True))


@rollout_group.command("resume")
@click.argument("rollout_id")
@_broker_options
@_key_option
@_db_option
@click.option("--json", "as_json", is_flag=True)
def resume_cmd(rollout_id: str, broker: str, username: str | None, password_file: Path | None,
               tls_ca: Path | None, key: Path, db: str, as_json: bool) -> None:
    """Go on with a running rollout (after a host crash, or for pending devices)."""
    from edgeq.fleet.rollout import resume_rollout

    _finish(resume_rollout(rollout_id, _broker(broker, username, password_file, tls_ca), key, db,
                           not as_json), as_json)


@rollout_group.command("abort")
@click.argument("rollout_id")
@_broker_options
@_key_option
@_db_option
@click.option("--json", "as_json", is_flag=True)
def abort_cmd(rollout_id: str, broker: str, username: str | None, password_file: Path | None,
              tls_ca: Path | None, key: Path, db: str, as_json: bool) -> None:
    """Stop a rollout and roll back every device it touched."""
    from edgeq.fleet.rollout import abort_rollout

    _finish(abort_rollout(rollout_id, _broker(broker, username, password_file, tls_ca), key, db,
                          not as_json), as_json)


@rollout_group.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True)
def list_cmd(db: str, as_json: bool) -> None:
    """Every rollout in the store, newest first."""
    from edgeq.fleet.store import open_store

    store = open_store(db, must_exist=True)
    try:
        rollouts = store.rollouts()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rollouts, indent=2))
        return
    if not rollouts:
        click.echo("no rollouts yet")
    for r in rollouts:
        s = r["spec"]
        click.echo(f"{r['id']}  {r['state']:<8} {Path(s['model']).name:<24} "
                   f"{s['model_sha256'][:12]}  group {s['group'] or '-'}  {s.get('reason', '')}")


def _scope(device: str | None, group: str | None) -> tuple[str, str]:
    if bool(device) == bool(group):
        raise InputError("name exactly one of --device D or --group G")
    return ("device", device) if device else ("group", group or "")


@rollout_group.command("pin")
@click.option("--device", help="Pin this device.")
@click.option("--group", help="Pin every device of this group.")
@click.option("--model", "model", required=True, metavar="SHA256|MODEL.tflite",
              help="The model they stay on: its sha256, or the .tflite itself.")
@click.option("--reason", default="", help="Shown when a rollout skips them.")
@_db_option
def pin_cmd(device: str | None, group: str | None, model: str, reason: str, db: str) -> None:
    """Hold a device or group on one model: rollouts of any other model skip it."""
    import re

    from device_agent.signing import sha256_file
    from edgeq.fleet.store import open_store

    scope, name = _scope(device, group)
    if re.fullmatch(r"[0-9a-f]{64}", model):
        sha = model
    elif Path(model).is_file():
        sha = sha256_file(Path(model))
    else:
        raise InputError(f"--model {model}: neither a sha256 (64 hex digits) nor a file")
    store = open_store(db)
    try:
        store.pin(scope, name, sha, reason)
    finally:
        store.close()
    click.echo(f"pinned {scope} {name} to {sha[:12]}")


@rollout_group.command("unpin")
@click.option("--device")
@click.option("--group")
@_db_option
def unpin_cmd(device: str | None, group: str | None, db: str) -> None:
    """Release a pin."""
    from edgeq.fleet.store import open_store

    scope, name = _scope(device, group)
    store = open_store(db, must_exist=True)
    try:
        released = store.unpin(scope, name)
    finally:
        store.close()
    if not released:
        raise InputError(f"{scope} {name} is not pinned")
    click.echo(f"unpinned {scope} {name}")
