"""Precision plans as data: which ops run with int16 activations, keyed by op fingerprints.

A plan names ops by fingerprint (op type + output tensor name + shapes), so when the model
changes, `check` lists exactly which entries no longer match — a plan never silently stops
applying.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, PlanError
from .graph import OpInfo

PLAN_FORMAT = "edgeq-plan"
PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class OpRef:
    """One op a plan refers to."""

    op: str
    name: str
    fingerprint: str

    @classmethod
    def of(cls, op: OpInfo) -> OpRef:
        return cls(op.op, op.name, op.fingerprint)

    def to_dict(self) -> dict[str, str]:
        return {"op": self.op, "name": self.name, "fingerprint": self.fingerprint}


def model_fingerprint(ops: list[OpInfo]) -> str:
    """A hash of the whole graph structure (all op fingerprints in order)."""
    return hashlib.sha256("\n".join(op.fingerprint for op in ops).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """int8 by default; the listed ops in int16 (16x8)."""

    model_fingerprint: str
    int16: tuple[OpRef, ...]
    default: str = "int8"
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_ops(cls, all_ops: list[OpInfo], int16_ops: list[OpInfo],
                metrics: dict[str, Any] | None = None) -> Plan:
        return cls(model_fingerprint(all_ops), tuple(OpRef.of(o) for o in int16_ops),
                   metrics=metrics or {})

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "schema_version": PLAN_SCHEMA_VERSION,
                "model_fingerprint": self.model_fingerprint, "default": self.default,
                "int16": [r.to_dict() for r in self.int16], "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "plan") -> Plan:
        if d.get("format") != PLAN_FORMAT or d.get("schema_version") != PLAN_SCHEMA_VERSION:
            raise InputError(f"{source}: not an edgeq plan (expected format '{PLAN_FORMAT}', "
                             f"schema_version {PLAN_SCHEMA_VERSION})")
        try:
            refs = tuple(OpRef(e["op"], e["name"], e["fingerprint"]) for e in d["int16"])
            return cls(d["model_fingerprint"], refs, d.get("default", "int8"), d.get("metrics", {}))
        except (KeyError, TypeError) as e:
            raise InputError(f"{source}: malformed plan entry ({e}); each int16 entry needs "
                             "op, name and fingerprint") from e

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
    """How a plan matches a model: matched op indices and entries that no longer match."""

    matched: dict[str, int]  # fingerprint -> op index
    stale: tuple[OpRef, ...]  # entries with no op of that fingerprint (renamed, reshaped, removed)

    @property
    def ok(self) -> bool:
        return not self.stale

    def describe(self) -> str:
        return "; ".join(f"{ref.op} '{ref.name}'" for ref in self.stale)


def check_plan(plan: Plan, ops: list[OpInfo]) -> PlanCheck:
    """Match every plan entry to the model's ops by fingerprint."""
    by_fp = {op.fingerprint: op for op in ops}
    matched = {r.fingerprint: by_fp[r.fingerprint].index for r in plan.int16 if r.fingerprint in by_fp}
    return PlanCheck(matched, tuple(r for r in plan.int16 if r.fingerprint not in by_fp))


def plan_indices(plan: Plan, ops: list[OpInfo], source: str) -> set[int]:
    """Op indices the plan puts in int16; raises PlanError listing stale entries."""
    result = check_plan(plan, ops)
    if not result.ok:
        raise PlanError(f"{source} does not match this model ({len(result.stale)} of "
                        f"{len(plan.int16)} entries stale: {result.describe()}); re-run "
                        "`edgeq search` or fix the plan")
    return set(result.matched.values())
