"""Precision plans as data: which ops run with int16 activations, keyed by op fingerprints.

A plan names ops by fingerprint (op type + output tensor name + shapes) and remembers every op
of the graph it was made for, so when the model changes `check_plan` lists exactly which ops were
removed, renamed or added — a plan never silently stops applying.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import InputError, PlanError
from edgeq.model.graph import OpInfo
from edgeq.quant.precision import Precision

PLAN_FORMAT = "edgeq-plan"
PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class OpRef:
    """One op a plan refers to."""

    op: str
    name: str
    fingerprint: str
    shape_key: str = ""

    @classmethod
    def of(cls, op: OpInfo) -> OpRef:
        return cls(op.op, op.name, op.fingerprint, op.shape_key)

    def to_dict(self) -> dict[str, str]:
        return {"op": self.op, "name": self.name, "fingerprint": self.fingerprint,
                "shape_key": self.shape_key}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpRef:
        return cls(d["op"], d["name"], d["fingerprint"], d.get("shape_key", ""))


def model_fingerprint(ops: list[OpInfo]) -> str:
    """A hash of the whole graph structure (all op fingerprints in order)."""
    return hashlib.sha256("\n".join(op.fingerprint for op in ops).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """int8 by default; the listed ops in int16 (16x8)."""

    model_fingerprint: str
    int16: tuple[OpRef, ...]
    graph: tuple[OpRef, ...] = ()  # every op of the model the plan was made for
    default: Precision = Precision.INT8
    metrics: dict[str, Any] = field(default_factory=dict)
    rewrites: tuple[str, ...] = ()  # graph rewrites the plan's model was made with
    calibration: str = "minmax"  # the range setting it was measured with

    @classmethod
    def for_ops(cls, all_ops: list[OpInfo], int16_ops: list[OpInfo],
                metrics: dict[str, Any] | None = None, default: Precision | str = Precision.INT8,
                rewrites: tuple[str, ...] = (), calibration: str = "minmax") -> Plan:
        """A plan over `all_ops` with `int16_ops` in int16. default "int16": every op not
        listed is int8 but the model I/O is int16 (plans derived from all-int16x8)."""
        return cls(model_fingerprint(all_ops), tuple(OpRef.of(o) for o in int16_ops),
                   tuple(OpRef.of(o) for o in all_ops), Precision(default), metrics or {},
                   tuple(rewrites), calibration)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "schema_version": PLAN_SCHEMA_VERSION,
                "model_fingerprint": self.model_fingerprint, "default": self.default.value,
                "rewrites": list(self.rewrites), "calibration": self.calibration,
                "int16": [r.to_dict() for r in self.int16], "metrics": self.metrics,
                "graph": [r.to_dict() for r in self.graph]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "plan") -> Plan:
        if d.get("format") != PLAN_FORMAT or d.get("schema_version") != PLAN_SCHEMA_VERSION:
            raise InputError(f"{source}: not an edgeq plan (expected format '{PLAN_FORMAT}', "
                             f"schema_version {PLAN_SCHEMA_VERSION})")
        if d.get("default", "int8") not in ("int8", "int16"):
            raise InputError(f"{source}: default must be 'int8' or 'int16', got {d.get('default')!r}")
        try:
            return cls(d["model_fingerprint"], tuple(OpRef.from_dict(e) for e in d["int16"]),
                       tuple(OpRef.from_dict(e) for e in d.get("graph", [])),
                       Precision(d.get("default", "int8")), d.get("metrics", {}),
                       tuple(d.get("rewrites", ())), str(d.get("calibration", "minmax")))
        except (KeyError, TypeError) as e:
            raise InputError(f"{source}: malformed plan entry ({e}); each entry needs op, name "
                             "and fingerprint") from e

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except FileNotFoundError:
            raise InputError(f"plan not found: {path}") from None
        except ValueError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from e


@dataclass(frozen=True)
class PlanCheck:
    """How a plan matches a model now."""

    matched: dict[str, int]  # int16 entry fingerprint -> op index in the model
    stale: tuple[OpRef, ...]  # int16 entries with no op of that fingerprint
    removed: tuple[OpRef, ...]  # ops of the plan's graph that are gone
    renamed: tuple[tuple[OpRef, OpInfo], ...]  # same op type and shapes, other name
    new: tuple[OpInfo, ...]  # ops the plan's graph did not have

    @property
    def ok(self) -> bool:
        """Every int16 entry matches and the graph has not changed."""
        return not (self.stale or self.removed or self.renamed or self.new)

    def drift(self) -> list[str]:
        """One line per renamed, removed or new op, and per int16 entry that no longer matches."""
        stale = {r.fingerprint for r in self.stale}

        def mark(ref: OpRef) -> str:
            return " [int16]" if ref.fingerprint in stale else ""

        lines = [f"renamed {ref.op} '{ref.name}' -> '{op.name}'{mark(ref)}"
                 for ref, op in self.renamed]
        lines += [f"removed {ref.op} '{ref.name}'{mark(ref)}" for ref in self.removed]
        lines += [f"new {op.op} '{op.name}'" for op in self.new]
        listed = {r.fingerprint for r in self.removed} | {r.fingerprint for r, _ in self.renamed}
        lines += [f"missing int16 {r.op} '{r.name}'" for r in self.stale if r.fingerprint not in listed]
        return lines

    def describe(self) -> str:
        return "; ".join(self.drift())

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "matched_int16": len(self.matched),
                "stale_int16": [r.to_dict() for r in self.stale],
                "removed": [r.to_dict() for r in self.removed],
                "renamed": [{"from": r.to_dict(), "to": OpRef.of(o).to_dict()}
                            for r, o in self.renamed],
                "new": [OpRef.of(o).to_dict() for o in self.new]}


def check_plan(plan: Plan, ops: list[OpInfo]) -> PlanCheck:
    """Match the plan's int16 entries and graph to the model's ops."""
    by_fp = {op.fingerprint: op for op in ops}
    matched = {r.fingerprint: by_fp[r.fingerprint].index for r in plan.int16 if r.fingerprint in by_fp}
    stale = tuple(r for r in plan.int16 if r.fingerprint not in by_fp)
    graph = plan.graph or plan.int16
    known = {r.fingerprint for r in graph}
    gone = [r for r in graph if r.fingerprint not in by_fp]
    added = [op for op in ops if op.fingerprint not in known] if plan.graph else []
    renamed, removed = [], []
    for ref in gone:  # pair by op type + shapes, in graph order
        twin = next((op for op in added if ref.shape_key and op.shape_key == ref.shape_key), None)
        if twin is None:
            removed.append(ref)
        else:
            added.remove(twin)
            renamed.append((ref, twin))
    return PlanCheck(matched, stale, tuple(removed), tuple(renamed), tuple(added))


def plan_indices(plan: Plan, ops: list[OpInfo], source: str) -> set[int]:
    """Op indices the plan puts in int16; raises PlanError listing the drift when it is stale."""
    result = check_plan(plan, ops)
    if not result.ok:
        raise PlanError(f"{source} does not match this model ({len(result.stale)} of "
                        f"{len(plan.int16)} int16 entries stale; {result.describe()}); re-run "
                        "`edgeq search` or check with `edgeq plan check`")
    return set(result.matched.values())
