"""`edgeq rollout`: one model to a whole group of devices in staged waves, judged by health
gates, halted and rolled back by itself.

A rollout deploys to a canary cohort first, benchmarks (and evaluates) it against the devices'
previous model, then widens in waves (each `waves` times the size of the one before) while every
gate holds: the failure rate (failed deploys, load checks and benchmarks; judged once
`min_sample` devices have finished), the p95 latency regression (median over the wave of each
device's new/old p95), the task metric and the agreement with the host's reference. The first
breached gate halts it and every device it touched is rolled back with a signed rollback.

Every device moves through a persisted state machine (`DEVICE_STATES`) in the result store, so a
host that dies mid-rollout resumes (`edgeq rollout resume ID`) from the store and the devices'
retained statuses: a device whose status already shows the new model is never deployed again.
Devices offline when their wave comes are `pending`; `resume` deploys to those that are back.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from device_agent.connection import Arrival, Broker, Kind
from device_agent.protocol import (
    MAX_RESULT_BYTES,
    ProtocolError,
    all_devices,
    check_result,
    command,
    decode,
    device_of,
    matches,
)
from device_agent.signing import SignatureError, authorize
from edgeq.errors import DeviceRefused, InputError
from edgeq.fleet.deploy import (
    CHUNK_SIZE,
    DeployConfig,
    build_bundle,
    publish_chunks,
    signed_manifest,
)
from edgeq.fleet.session import HostSession, new_command_id
from edgeq.fleet.store import SQLStore, open_store
from edgeq.progress import CountProgress

log = logging.getLogger("edgeq")

ROLLOUT_STATES = ("running", "halted", "done", "aborted")
DEVICE_STATES = ("queued", "sending", "activated", "verified", "failed", "rolled-back", "pending",
                 "skipped")
TOUCHED = ("sending", "activated", "verified")  # what a halt or abort rolls back
SETTLED = ("verified", "failed", "rolled-back", "skipped")  # nothing left to do
MAX_IN_FLIGHT = 500  # commands sent before the first answers are read


# ---------------------------------------------------------------------------------------------
# what a rollout is asked to do

GATE = re.compile(r"^(p95-latency)<=([0-9.]+)%$|^(task|agreement)>=(-?[0-9.]+)$")


@dataclass(frozen=True)
class Gate:
    """A health gate: `p95-latency` (largest regression in percent over the previous model),
    `task` or `agreement` (smallest mean value over the wave)."""

    metric: str
    limit: float

    @classmethod
    def parse(cls, text: str) -> Gate:
        m = GATE.match(text.strip())
        if not m:
            raise InputError(f"unknown gate '{text}'; expected p95-latency<=X% (e.g. 20%), "
                             "task>=Y or agreement>=Y")
        return cls(m[1], float(m[2])) if m[1] else cls(m[3], float(m[4]))

    @property
    def text(self) -> str:
        return (f"p95-latency<={self.limit:g}%" if self.metric == "p95-latency"
                else f"{self.metric}>={self.limit:g}")


def parse_count(text: str, what: str) -> tuple[float, bool]:
    """`N` or `P%` -> (value, is_percent)."""
    body, percent = (text[:-1], True) if text.endswith("%") else (text, False)
    try:
        value = float(body)
    except ValueError:
        value = -1.0
    if value <= 0 or (percent and value > 100) or (not percent and value != int(value)):
        raise InputError(f"{what} '{text}' is not a device count (N >= 1) or a percentage (P%)")
    return value, percent


def wave_sizes(total: int, canary: str, factor: float) -> list[int]:
    """How many devices each wave takes: the canary (N or P% of `total`, at least 1), then each
    wave `factor` times the one before, until all are in."""
    if total == 0:
        return []
    value, percent = parse_count(canary, "--canary")
    first = min(total, max(1, math.ceil(total * value / 100) if percent else int(value)))
    sizes, size = [first], first
    while sum(sizes) < total:
        size = max(size + 1, math.ceil(size * factor))
        sizes.append(min(size, total - sum(sizes)))
    return sizes


@dataclass(frozen=True)
class RolloutConfig:
    """Everything `edgeq rollout` needs."""

    model: Path
    broker: Broker
    key: Path
    db: str
    group: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    canary: str = "5%"
    waves: float = 4.0  # each wave this many times the one before
    max_failure_rate: float = 0.05
    min_sample: int = 1
    gates: tuple[Gate, ...] = ()
    timeout_s: float = 120.0  # per device and step (deploy, benchmark, rollback)
    eval: Path | None = None
    eval_samples: int = 0
    name: str | None = None
    bench_runs: int = 50
    chunk_size: int = CHUNK_SIZE
    discover_s: float = 1.0  # how long retained statuses take to arrive
    show_progress: bool = True

    def __post_init__(self) -> None:
        wave_sizes(1, self.canary, self.waves)  # a bad --canary fails before anything is sent
        if self.waves < 1:
            raise InputError(f"--waves {self.waves:g}: each wave must be at least as large as "
                             "the one before (>= 1)")
        if self.group is None and not self.tags:
            raise InputError("a rollout needs --group G or --tag K=V (every device matching both "
                             "gets the model)")

    def spec(self, bundle_sha: str, model_sha: str) -> dict[str, Any]:
        """What the store keeps to resume the rollout."""
        return {"model": str(self.model), "model_sha256": model_sha, "bundle_sha256": bundle_sha,
                "group": self.group, "tags": self.tags, "canary": self.canary,
                "waves": self.waves, "max_failure_rate": self.max_failure_rate,
                "min_sample": self.min_sample, "gates": [g.text for g in self.gates],
                "timeout_s": self.timeout_s, "bench_runs": self.bench_runs,
                "eval": str(self.eval) if self.eval else None, "eval_samples": self.eval_samples,
                "name": self.name}


def config_from_spec(spec: dict[str, Any], broker: Broker, key: Path, db: str,
                     show_progress: bool = True) -> RolloutConfig:
    """The configuration a stored rollout was started with."""
    return RolloutConfig(Path(spec["model"]), broker, key, db, spec["group"], spec["tags"],
                         spec["canary"], spec["waves"], spec["max_failure_rate"],
                         spec["min_sample"], tuple(Gate.parse(g) for g in spec["gates"]),
                         spec["timeout_s"], Path(spec["eval"]) if spec["eval"] else None,
                         spec["eval_samples"], spec["name"], spec["bench_runs"],
                         show_progress=show_progress)


# ---------------------------------------------------------------------------------------------
# one host connection that watches the whole fleet

class FleetView:
    """Every retained status, event and result of the fleet through one host connection,
    indexed by device and command id."""

    def __init__(self, session: HostSession) -> None:
        self.session = session
        self.statuses: dict[str, dict[str, Any]] = {}
        self.events: collections.deque[dict[str, Any]] = collections.deque()
        self.results: dict[str, dict[str, Any]] = {}  # by cmd_id

    def start(self, settle_s: float) -> None:
        """Subscribe and read the retained statuses (until none arrive for `settle_s`)."""
        self.session.subscribe(all_devices("status"), all_devices("event"), all_devices("result"))
        for name, message in self.session.unread:  # what arrived before the subscription's ack
            self._take_message(name, message)
        self.session.unread.clear()
        last = time.monotonic()
        while time.monotonic() - last < settle_s:
            if self.pump(0.1):
                last = time.monotonic()

    def pump(self, seconds: float, burst: int = 10_000) -> int:
        """Wait up to `seconds` for a message, then read what is queued (up to `burst`);
        returns how many messages were taken."""
        inbox = self.session.inbox
        item, taken = inbox.get(timeout=seconds), 0
        for _ in range(burst):
            if item is None:
                break
            taken += self._take(item)
            item = inbox.get_nowait()
        else:
            if item is not None:
                taken += self._take(item)
        return taken

    def _take(self, arrival: Arrival) -> int:
        if arrival.kind is not Kind.MESSAGE:
            return 0
        leaf = arrival.topic.rsplit("/", 1)[-1]
        try:
            message = decode(arrival.payload, arrival.topic,
                             MAX_RESULT_BYTES if leaf == "result" else None)
        except ProtocolError as e:
            log.warning("rollout: ignoring %s", e)
            return 0
        return self._take_message(arrival.topic, message)

    def _take_message(self, name: str, message: dict[str, Any]) -> int:
        device, leaf = device_of(name), name.rsplit("/", 1)[-1]
        if device is None:
            return 0
        if leaf == "result":
            try:
                message = check_result(message)
            except ProtocolError as e:
                log.warning("rollout: ignoring %s", e)
                return 0
        if message.get("device") not in (None, device):
            return 0  # a message about another device on this one's topic
        if leaf == "status":
            self.statuses[device] = message
        elif leaf == "event" and isinstance(message.get("cmd_id"), str):
            self.events.append({**message, "device": device})
        elif leaf == "result" and isinstance(message.get("cmd_id"), str):
            self.results[message["cmd_id"]] = message
        return 1

    def online(self, device: str) -> bool:
        return (self.statuses.get(device) or {}).get("state") == "online"

    def model(self, device: str) -> dict[str, Any]:
        """The device's active model as its status names it ({} when none)."""
        model = (self.statuses.get(device) or {}).get("model")
        return model if isinstance(model, dict) else {}


# ---------------------------------------------------------------------------------------------
# the rollout

@dataclass
class DeviceRow:
    """One device's place in a rollout (a row of the store's rollout_devices)."""

    device: str
    wave: int
    state: str = "queued"
    cmd_id: str | None = None
    previous: str | None = None  # the bundle it ran before (what a rollback goes back to)
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "wave": self.wave, "state": self.state,
                "cmd_id": self.cmd_id, "previous": self.previous, "message": self.message}


@dataclass
class RolloutReport:
    """What a rollout did: its state, why it stopped, each wave's gate values, each device."""

    rollout_id: str
    state: str
    reason: str
    model_sha256: str
    waves: list[dict[str, Any]]
    devices: list[DeviceRow]
    seconds: float

    def counts(self) -> dict[str, int]:
        found = collections.Counter(d.state for d in self.devices)
        return {s: found[s] for s in DEVICE_STATES if found[s]}

    def to_dict(self) -> dict[str, Any]:
        return {"rollout_id": self.rollout_id, "state": self.state, "reason": self.reason,
                "model_sha256": self.model_sha256, "counts": self.counts(), "waves": self.waves,
                "seconds": round(self.seconds, 3),
                "devices": [d.to_dict() for d in self.devices]}


class Rollout:
    """A rollout in progress: the devices' rows, the bundle, one connection to the fleet."""

    def __init__(self, cfg: RolloutConfig, store: SQLStore, rollout_id: str,
                 rows: dict[str, DeviceRow], bundle: bytes, meta: dict[str, Any]) -> None:
        self.cfg, self.store, self.id = cfg, store, rollout_id
        self.rows, self.bundle, self.meta = rows, bundle, meta
        self.model_sha = meta["model"]["sha256"]
        self.waves: list[dict[str, Any]] = []
        self.view: FleetView
        self.progress = CountProgress(len(rows), f"rollout {rollout_id}", "device",
                                      cfg.show_progress)

    # -- persistence ---------------------------------------------------------------------

    def save(self, rows: Iterable[DeviceRow]) -> None:
        rows = list(rows)
        if rows:
            self.store.save_devices(self.id, [r.to_dict() for r in rows])
        self.progress.set(sum(r.state in SETTLED for r in self.rows.values()))

    def set_state(self, state: str, reason: str) -> None:
        spec = (self.store.rollout(self.id) or {}).get("spec") or {}
        self.store.save_rollout(self.id, state, {**spec, "reason": reason})

    # -- the waves -----------------------------------------------------------------------

    def attach(self, session: HostSession, view: FleetView | None = None) -> None:
        """Watch the fleet through `session` (`view`: statuses already read on it)."""
        if view is None:
            view = FleetView(session)
            view.start(self.cfg.discover_s)
        self.view = view

    def run(self, session: HostSession, view: FleetView | None = None) -> tuple[str, str]:
        """Every wave with unfinished devices, in order; returns (state, reason)."""
        self.attach(session, view)
        self._recover()
        for wave in sorted({r.wave for r in self.rows.values()}):
            cohort = [r for r in self.rows.values() if r.wave == wave and r.state not in SETTLED]
            if not cohort:
                continue
            breach = self._wave(wave, cohort)
            if breach:
                self._roll_back(f"halted in wave {wave}: {breach}")
                return "halted", f"wave {wave}: {breach}"
        pending = [r.device for r in self.rows.values() if r.state == "pending"]
        if pending:
            return "running", (f"{len(pending)} devices were offline and are pending "
                               f"(`edgeq rollout resume {self.id}` once they are back)")
        return "done", "every targeted device runs the model (or was skipped, with the reason)"

    def _recover(self) -> None:
        """After a host crash: a device caught `sending` is activated if its status shows the
        new model, else queued again (its old command has expired); pending devices that are
        back online are queued."""
        changed = []
        for r in self.rows.values():
            if r.state == "sending":
                on_it = self.view.model(r.device).get("sha256") == self.model_sha
                r.state, r.message = (("activated", "the device already runs this model")
                                      if on_it else ("queued", "resent after a host restart"))
                changed.append(r)
            elif r.state == "pending" and self.view.online(r.device):
                r.state = "queued"
                changed.append(r)
        self.save(changed)

    def _wave(self, wave: int, cohort: list[DeviceRow]) -> str | None:
        """Deploy, measure and judge one wave; the breached gate's text, or None."""
        offline = [r for r in cohort if r.state == "queued" and not self.view.online(r.device)]
        for r in offline:
            r.state, r.message = "pending", "offline when its wave came"
        self.save(offline)
        live = [r for r in cohort if r.state in ("queued", "activated")]
        log.info("rollout %s: wave %d: %d devices (%d offline, pending)", self.id, wave,
                 len(live), len(offline))
        need_bench = bool(self.cfg.gates)
        before = self._benchmark([r for r in live if r.state == "queued"
                                  and self.view.model(r.device)]) if need_bench else {}
        if need_bench:  # activated before a host restart: their baseline is in the store
            before.update(self._stored_baselines([r for r in live if r.state == "activated"]))
        self._deploy([r for r in live if r.state == "queued"])
        activated = [r for r in live if r.state == "activated"]
        after = self._benchmark(activated) if need_bench else {}
        for r in activated:
            failed = after.get(r.device, {}).get("errors") if need_bench else None
            if need_bench and r.device not in after:
                r.state, r.message = "failed", "no benchmark report of the new model"
            elif failed:
                r.state, r.message = "failed", "benchmark: " + "; ".join(failed)[:300]
        self.save(activated)
        judged = self._judge(wave, live, before, after)
        if judged is None:
            for r in live:
                if r.state == "activated":
                    r.state = "verified"
            self.save(live)
        return judged

    def _judge(self, wave: int, live: list[DeviceRow], before: dict[str, dict[str, Any]],
               after: dict[str, dict[str, Any]]) -> str | None:
        """The gates on this wave (failure rate over every device finished so far)."""
        finished = [r for r in self.rows.values() if r.state in ("activated", "verified", "failed")]
        failed = sum(r.state == "failed" for r in finished)
        record: dict[str, Any] = {"wave": wave, "devices": len(live), "failed": failed,
                                  "finished": len(finished)}
        self.waves.append(record)
        breach = None
        if len(finished) >= self.cfg.min_sample and finished:
            rate = failed / len(finished)
            record["failure_rate"] = round(rate, 4)
            if rate > self.cfg.max_failure_rate:
                breach = (f"failure rate {rate:.1%} ({failed} of {len(finished)}) > "
                          f"{self.cfg.max_failure_rate:.1%}")
        for gate in self.cfg.gates:
            value, why = _gate_value(gate, [r.device for r in live if r.state == "activated"],
                                     before, after)
            record[gate.text] = value
            if breach is None and why:
                breach = why
        record["breach"] = breach
        log.info("rollout %s: wave %d: %s", self.id, wave,
                 breach or f"gates hold ({len(finished) - failed} of {len(finished)} ok)")
        return breach

    # -- steps: each sends one command per device and reads the answers together ---------

    def _deploy(self, rows: list[DeviceRow]) -> None:
        """Signed deploy to each; `sending` is stored before anything is sent."""
        lifetime = max(300.0, 3 * self.cfg.timeout_s)
        todo: dict[str, tuple[DeviceRow, Any]] = {}
        for r in rows:
            current = self.view.model(r.device)
            if current.get("sha256") == self.model_sha:
                r.state, r.message = "activated", "the device already runs this model"
                continue
            manifest = signed_manifest(self.cfg.key, r.device, self.bundle, self.meta,
                                       self.cfg.chunk_size, lifetime)
            cmd = command("deploy", new_command_id("deploy"), manifest=manifest,
                          expires=round(time.time() + self.cfg.timeout_s, 3))
            r.state, r.cmd_id, r.previous = "sending", cmd.id, current.get("bundle")
            todo[cmd.id] = (r, cmd)
        self.save(rows)
        chunks = -(-len(self.bundle) // self.cfg.chunk_size)

        def on_event(event: dict[str, Any], r: DeviceRow) -> bool:
            state = event.get("state")
            if state == "ready":
                publish_chunks(self.view.session.client, r.device, event["cmd_id"], self.bundle,
                               self.cfg.chunk_size, self.cfg.timeout_s)
                return False
            if state == "activated":
                r.state, r.message = "activated", event.get("message")
                return True
            if state in ("rejected", "failed"):
                r.state, r.message = "failed", str(event.get("message"))[:500]
                return True
            return False
        self._exchange({c: (r, cmd) for c, (r, cmd) in todo.items()}, on_event,
                       self.cfg.timeout_s + chunks * 0.05, "deploy")

    def _benchmark(self, rows: list[DeviceRow]) -> dict[str, dict[str, Any]]:
        """A short benchmark (and evaluation, when the bundle has eval data) on each; their
        results by device, also kept in the store."""
        args = {"runs": self.cfg.bench_runs, "warmup": 5, "max_seconds": 30.0, "power": False,
                "evaluate": bool((self.meta.get("eval") or {}).get("samples"))}
        todo = {}
        for r in rows:
            cmd = command("benchmark", new_command_id("bench"), **args,
                          expires=round(time.time() + self.cfg.timeout_s, 3))
            todo[cmd.id] = (r, cmd)
        got: dict[str, dict[str, Any]] = {}

        def on_event(event: dict[str, Any], r: DeviceRow) -> bool:
            if event["cmd_id"] in self.view.results:
                got[r.device] = self.view.results.pop(event["cmd_id"])
                return True
            return event.get("state") in ("rejected", "failed") and not event.get("report_id")
        self._exchange(todo, on_event, self.cfg.timeout_s + 30.0, "benchmark")
        if got:
            self.store.add(list(got.values()))
        return got

    def _stored_baselines(self, rows: list[DeviceRow]) -> dict[str, dict[str, Any]]:
        """The newest stored benchmark of each device's previous model."""
        found = {}
        for r in rows:
            runs = [res for res in self.store.results(r.device) if res["type"] == "benchmark"
                    and (res.get("model") or {}).get("bundle") == r.previous and r.previous]
            if runs:
                found[r.device] = runs[-1]
        return found

    def _roll_back(self, why: str) -> None:
        """Signed rollback of every device this rollout touched."""
        touched = [r for r in self.rows.values() if r.state in TOUCHED]
        todo = {}
        for r in touched:
            if not r.previous:
                r.message = f"{why}; no previous model to roll back to"
                continue
            if self.view.model(r.device).get("bundle") == r.previous:
                r.state, r.message = "rolled-back", f"{why}; still on its previous model"
                continue
            try:
                statement = authorize(self.cfg.key, "rollback", r.device,
                                      max(300.0, 3 * self.cfg.timeout_s), to=r.previous)
            except SignatureError as e:
                raise InputError(str(e)) from e
            cmd = command("rollback", new_command_id("rollback"), authorization=statement,
                          expires=round(time.time() + self.cfg.timeout_s, 3))
            todo[cmd.id] = (r, cmd)

        def on_event(event: dict[str, Any], r: DeviceRow) -> bool:
            if event.get("state") == "activated":
                r.state, r.message = "rolled-back", why
                return True
            if event.get("state") in ("rejected", "failed"):
                r.message = f"{why}; rollback refused: {event.get('message')}"[:500]
                return True
            return False
        self._exchange(todo, on_event, self.cfg.timeout_s, "rollback")
        self._confirm_rollbacks(touched)
        self.save(touched)

    def _confirm_rollbacks(self, rows: list[DeviceRow], wait_s: float = 10.0) -> None:
        """A rollback counts once the device's retained status shows its previous model."""
        back = [r for r in rows if r.state == "rolled-back"]
        deadline = time.monotonic() + wait_s

        def unconfirmed() -> list[DeviceRow]:
            return [r for r in back if self.view.model(r.device).get("bundle") != r.previous]
        while unconfirmed() and time.monotonic() < deadline:
            self.view.pump(0.2)
        for r in unconfirmed():
            r.state = "failed"
            r.message = (f"{r.message}; the device said it rolled back but its status still "
                         f"shows {str(self.view.model(r.device).get('bundle'))[:12]}")

    def _exchange(self, todo: dict[str, tuple[DeviceRow, Any]],
                  on_event: Callable[[dict[str, Any], DeviceRow], bool], timeout: float,
                  what: str) -> None:
        """Send every command (MAX_IN_FLIGHT at a time), hand each answer to `on_event` until it
        says the command is over; commands still open after `timeout` fail their device."""
        session, waiting = self.view.session, cast(dict[str, DeviceRow], {})
        queue = list(todo.items())
        deadline = time.monotonic() + timeout
        while (queue or waiting) and time.monotonic() < deadline:
            while queue and len(waiting) < MAX_IN_FLIGHT:
                cmd_id, (r, cmd) = queue.pop(0)
                session.publish_command(r.device, cmd, self.cfg.timeout_s)
                waiting[cmd_id] = r
            self.view.pump(0.2)
            while self.view.events:
                event = self.view.events.popleft()
                row = waiting.get(event["cmd_id"])
                if row is not None and event["device"] == row.device and on_event(event, row):
                    del waiting[event["cmd_id"]]
            for cmd_id in [c for c in waiting if c in self.view.results]:  # a result before
                if on_event({"cmd_id": cmd_id, "state": "done"}, waiting[cmd_id]):  # its event
                    del waiting[cmd_id]
        for r in list(waiting.values()) + [r for _, (r, _) in queue]:
            if what == "rollback":
                r.message = f"{r.message or ''}; rollback: no answer within {timeout:.0f} s"
            elif r.state not in ("failed",):
                r.state, r.message = "failed", f"{what}: no answer within {timeout:.0f} s"


def _gate_value(gate: Gate, devices: list[str], before: dict[str, dict[str, Any]],
                after: dict[str, dict[str, Any]]) -> tuple[float | None, str | None]:
    """(the wave's value of `gate`, the breach text or None). A gate nothing could be measured
    for is a breach: the user asked for it."""
    if gate.metric == "p95-latency":
        ratios = [_p95(after[d]) / _p95(before[d]) for d in devices
                  if d in before and d in after and _p95(before[d]) > 0 and _p95(after[d]) > 0]
        if not ratios:
            return None, f"{gate.text}: no device has a latency of both models to compare"
        regression = (statistics.median(ratios) - 1) * 100
        breach = regression > gate.limit
        return round(regression, 2), (f"p95 latency {regression:+.1f}% vs the previous model "
                                      f"(median of {len(ratios)} devices) > {gate.limit:g}%"
                                      if breach else None)
    values = [v for d in devices if d in after and (v := _accuracy(after[d], gate.metric)) is not None]
    if not values:
        return None, (f"{gate.text}: no device reported {gate.metric} (deploy with --eval "
                      "data that has labels)" if gate.metric == "task" else
                      f"{gate.text}: no device reported agreement (deploy with --eval)")
    mean = statistics.fmean(values)
    return round(mean, 6), (f"{gate.metric} {mean:.4g} (mean of {len(values)} devices) < "
                            f"{gate.limit:g}" if mean < gate.limit else None)


def _p95(result: dict[str, Any]) -> float:
    latency = result.get("latency") or {}
    value = latency.get("p95_ms", latency.get("p99_ms"))  # agents before p95 report p99
    return float(value) if isinstance(value, (int, float)) else 0.0


def _accuracy(result: dict[str, Any], metric: str) -> float | None:
    acc = result.get("accuracy") or {}
    value = ((acc.get("task") or {}).get("value") if metric == "task"
             else (acc.get("agreement") or {}).get("exact_match_rate"))
    return float(value) if isinstance(value, (int, float)) else None


# ---------------------------------------------------------------------------------------------
# entry points: start, resume, abort, status

def _bundle(cfg: RolloutConfig) -> tuple[bytes, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="edgeq-rollout-") as tmp:
        path = Path(tmp) / "bundle.zip"
        meta = build_bundle(DeployConfig(cfg.model, "rollout", cfg.broker, cfg.key, cfg.eval,
                                         cfg.eval_samples, name=cfg.name), path)
        return path.read_bytes(), meta


def _targets(view: FleetView, cfg: RolloutConfig) -> list[str]:
    return sorted(d for d, s in view.statuses.items() if matches(s, cfg.group, cfg.tags))


def _pin_reason(pins: list[dict[str, Any]], status: dict[str, Any], device: str,
                model_sha: str) -> str | None:
    groups = status.get("groups")
    groups = groups if isinstance(groups, list) else []
    for pin in pins:
        applies = (pin["scope"] == "device" and pin["name"] == device) or \
            (pin["scope"] == "group" and pin["name"] in groups)
        if applies and pin["model_sha256"] != model_sha:
            return (f"pinned ({pin['scope']} {pin['name']}) to {pin['model_sha256'][:12]}: "
                    f"{pin['reason'] or 'no reason given'}")
    return None


def start_rollout(cfg: RolloutConfig) -> RolloutReport:
    """Plan the waves over the devices the group/tags select now, store the plan, run it."""
    started = time.perf_counter()
    bundle, meta = _bundle(cfg)
    model_sha = meta["model"]["sha256"]
    store = open_store(cfg.db)
    rollout_id = f"ro-{uuid.uuid4().hex[:10]}"
    try:
        with HostSession(cfg.broker, max_inflight=MAX_IN_FLIGHT) as session:
            view = FleetView(session)
            view.start(cfg.discover_s)
            targets = _targets(view, cfg)
            if not targets:
                raise DeviceRefused(f"no device matches {_selector(cfg)} on {cfg.broker.url}")
            rows = _plan(store, view, cfg, targets, model_sha)
            store.save_rollout(rollout_id, "running",
                               cfg.spec(hashlib.sha256(bundle).hexdigest(), model_sha))
            store.save_devices(rollout_id, [r.to_dict() for r in rows.values()])
            log.info("rollout %s: %s to %d devices (%s) in %d waves", rollout_id,
                     meta["name"], len(rows), _selector(cfg),
                     len({r.wave for r in rows.values() if r.state == "queued"}))
            return _run(Rollout(cfg, store, rollout_id, rows, bundle, meta), session, started,
                        view)
    finally:
        store.close()


def _plan(store: SQLStore, view: FleetView, cfg: RolloutConfig, targets: list[str],
          model_sha: str) -> dict[str, DeviceRow]:
    """A row per target: pinned devices skipped, the rest dealt into waves in device order."""
    rows, eligible, pins = {}, [], store.pins()
    for d in targets:
        why = _pin_reason(pins, view.statuses[d], d, model_sha)
        if why:
            rows[d] = DeviceRow(d, -1, "skipped", message=why)
        else:
            eligible.append(d)
    sizes = wave_sizes(len(eligible), cfg.canary, cfg.waves)
    position = 0
    for wave, size in enumerate(sizes):
        for d in eligible[position:position + size]:
            rows[d] = DeviceRow(d, wave)
        position += size
    return rows


def _run(rollout: Rollout, session: HostSession, started: float,
         view: FleetView | None = None) -> RolloutReport:
    try:
        state, reason = rollout.run(session, view)
    finally:
        rollout.progress.close()
    rollout.set_state(state, reason)
    return RolloutReport(rollout.id, state, reason, rollout.model_sha, rollout.waves,
                         _in_order(rollout.rows),
                         time.perf_counter() - started)


def _load(store: SQLStore, rollout_id: str) -> tuple[dict[str, Any], dict[str, DeviceRow]]:
    stored = store.rollout(rollout_id)
    if stored is None:
        raise InputError(f"no rollout '{rollout_id}' in {store.where} (`edgeq rollout list`)")
    rows = {d["device"]: DeviceRow(d["device"], d["wave"], d["state"], d["cmd_id"], d["previous"],
                                   d["message"]) for d in store.rollout_devices(rollout_id)}
    return stored, rows


def resume_rollout(rollout_id: str, broker: Broker, key: Path, db: str,
                   show_progress: bool = True) -> RolloutReport:
    """Go on with a rollout a host left `running` (crashed, or devices pending)."""
    started = time.perf_counter()
    store = open_store(db, must_exist=True)
    try:
        stored, rows = _load(store, rollout_id)
        if stored["state"] != "running":
            raise InputError(f"rollout {rollout_id} is {stored['state']} "
                             f"({stored['spec'].get('reason', '')}); start a new one")
        cfg = config_from_spec(stored["spec"], broker, key, db, show_progress)
        bundle, meta = _bundle(cfg)
        if meta["model"]["sha256"] != stored["spec"]["model_sha256"]:
            raise InputError(f"{cfg.model} changed since rollout {rollout_id} started (model "
                             f"sha256 {meta['model']['sha256'][:12]}, was "
                             f"{stored['spec']['model_sha256'][:12]}); start a new rollout")
        with HostSession(broker, max_inflight=MAX_IN_FLIGHT) as session:
            return _run(Rollout(cfg, store, rollout_id, rows, bundle, meta), session, started)
    finally:
        store.close()


def abort_rollout(rollout_id: str, broker: Broker, key: Path, db: str,
                  show_progress: bool = True) -> RolloutReport:
    """Stop a rollout and roll back every device it touched."""
    started = time.perf_counter()
    store = open_store(db, must_exist=True)
    try:
        stored, rows = _load(store, rollout_id)
        cfg = config_from_spec(stored["spec"], broker, key, db, show_progress)
        meta = {"model": {"sha256": stored["spec"]["model_sha256"]}}
        rollout = Rollout(cfg, store, rollout_id, rows, b"", meta)
        with HostSession(broker, max_inflight=MAX_IN_FLIGHT) as session:
            rollout.attach(session)
            rollout._roll_back("aborted")
            for r in rows.values():
                if r.state in ("queued", "pending"):
                    r.state, r.message = "skipped", "aborted before its wave"
            rollout.save(rows.values())
        rollout.progress.close()
        rollout.set_state("aborted", "aborted by the user")
        return RolloutReport(rollout_id, "aborted", "aborted by the user",
                             stored["spec"]["model_sha256"], [],
                             _in_order(rows),
                             time.perf_counter() - started)
    finally:
        store.close()


def rollout_status(rollout_id: str, db: str) -> RolloutReport:
    """A stored rollout as it stands."""
    store = open_store(db, must_exist=True)
    try:
        stored, rows = _load(store, rollout_id)
    finally:
        store.close()
    return RolloutReport(rollout_id, stored["state"], stored["spec"].get("reason", ""),
                         stored["spec"]["model_sha256"], [],
                         _in_order(rows),
                         stored["updated"] - stored["created"])


def _in_order(rows: dict[str, DeviceRow]) -> list[DeviceRow]:
    return sorted(rows.values(), key=lambda r: (r.wave, r.device))


def _selector(cfg: RolloutConfig) -> str:
    parts = ([f"group {cfg.group}"] if cfg.group else []) + [f"{k}={v}" for k, v in cfg.tags.items()]
    return ", ".join(parts)
