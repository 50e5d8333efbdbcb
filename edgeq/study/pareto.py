"""Pareto frontier of measured points (metric up, cost down), and its CSV and plot."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeq.study.measure import Point

COST_AXES = ("bytes", "latency_ms")


def dominates(a: Point, b: Point, cost: str) -> bool:
    """a is at least as good as b on score and cost, and better on one."""
    ca, cb = a.cost(cost), b.cost(cost)
    return a.score >= b.score and ca <= cb and (a.score > b.score or ca < cb)


def frontier(points: Sequence[Point], cost: str) -> list[Point]:
    """The non-dominated points that ran, cheapest first."""
    ran = [p for p in points if not p.error]
    front = [p for p in ran if not any(dominates(q, p, cost) for q in ran if q is not p)]
    unique: dict[tuple[float, float], Point] = {}
    for p in front:  # equal points: keep the first measured
        unique.setdefault((p.score, p.cost(cost)), p)
    return sorted(unique.values(), key=lambda p: (p.cost(cost), -p.score))


def points_csv(points: Sequence[Point], on_front: dict[str, set[int]]) -> str:
    """One row per point; `on_frontier_<axis>` columns say where it is non-dominated."""
    buf = io.StringIO()
    fields = ["label", "default", "int16_requested", "int16_ops", "score", "value", "sqnr_db",
              "bytes", "latency_ms", "requantize_ops", "activation_bytes", "error"]
    writer = csv.writer(buf)
    writer.writerow(fields + [f"on_frontier_{axis}" for axis in COST_AXES])
    for p in points:
        d = p.to_dict()
        writer.writerow([d.get(f, "") for f in fields]
                        + [id(p) in on_front[axis] for axis in COST_AXES])
    return buf.getvalue()


def plot(path: Path, points: Sequence[Point], marks: dict[str, Point], chosen: Point | None,
         metric_label: str, float_score: float | None, title: str) -> None:
    """pareto.png: metric vs size and vs latency, frontier line, endpoints and chosen point.

    The chosen point is a ring drawn behind the endpoint markers, so an endpoint that is also
    the choice stays visible; every marked point carries its name. Without a float score (SQNR
    mode: the float model is the reference, infinitely far up) a note says so."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    points = [p for p in points if not p.error]
    marks = {k: p for k, p in marks.items() if not p.error}
    fig = Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, 2, sharey=True)
    styles = {"all-int8": ("s", "tab:blue"), "all-int16x8": ("^", "tab:red")}
    for ax, cost, xlabel in zip(axes, COST_AXES, ("model size (bytes)", "LiteRT latency (ms)")):
        ax.scatter([p.cost(cost) for p in points], [p.score for p in points], s=14,
                   color="0.7", label="evaluated plans", zorder=1)
        front = frontier(points, cost)
        ax.step([p.cost(cost) for p in front], [p.score for p in front], where="post",
                color="tab:green", label="Pareto frontier", zorder=2)
        if chosen is not None:
            ax.scatter([chosen.cost(cost)], [chosen.score], marker="o", s=420,
                       facecolor="none", edgecolor="goldenrod", linewidth=3,
                       label=f"chosen: {chosen.label[:30]}", zorder=3)
        for label, p in marks.items():
            marker, color = styles.get(label, ("D", "tab:purple"))
            ax.scatter([p.cost(cost)], [p.score], marker=marker, s=60, color=color, label=label,
                       zorder=4)
            ax.annotate(label, (p.cost(cost), p.score), textcoords="offset points",
                        xytext=(8, -12), fontsize=8, color=color)
        if float_score is not None:
            ax.axhline(float_score, linestyle="--", color="black", linewidth=1, label="float")
        else:
            ax.set_title("float model = the reference (SQNR infinite, off the top)", fontsize=8,
                         loc="left")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric_label)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def frontier_ids(points: Sequence[Point]) -> dict[str, set[int]]:
    """id()s of frontier points per cost axis."""
    return {axis: {id(p) for p in frontier(points, axis)} for axis in COST_AXES}


def point_rows(points: Sequence[Point], on_front: dict[str, set[int]]) -> list[dict[str, Any]]:
    """pareto.json rows: each point plus its frontier flags."""
    return [dict(p.to_dict(), **{f"on_frontier_{axis}": id(p) in on_front[axis]
                                 for axis in COST_AXES}) for p in points]
