"""`edgeq reports`: devices and models side by side — latency percentiles, energy per
inference, accuracy and agreement with the host — as a table, JSON, CSV or a plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

COLUMNS = ("device", "arch", "runtime", "model", "sha256", "reports", "p50_ms", "p90_ms",
           "p99_ms", "energy_mj", "metric", "value", "host_value", "exact_match", "max_lsb",
           "errors")


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (device, model): the latest figures of each kind, and the report count.
    Optional fields may be missing (older agents, failed runs): they show as empty."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: _number(r.get("ts")) or 0.0):
        model, runtime = _dict(r.get("model")), _dict(r.get("runtime"))
        key = (str(r.get("device")), str(model.get("sha256")))
        row = rows.setdefault(key, {c: None for c in COLUMNS} | {"reports": 0})
        row.update(device=key[0], arch=r.get("arch"), model=model.get("name"),
                   sha256=key[1][:12], runtime=f"{runtime.get('name')} {runtime.get('version')}")
        row["reports"] += 1
        row["errors"] = len(r.get("errors") or []) or None
        _take_latency(row, _dict(r.get("latency")))
        _take_power(row, _dict(r.get("power")))
        _take_accuracy(row, _dict(r.get("accuracy")))
    return [rows[k] for k in sorted(rows)]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _take_latency(row: dict[str, Any], latency: dict[str, Any]) -> None:
    if latency:
        row.update({k: _number(latency.get(k)) for k in ("p50_ms", "p90_ms", "p99_ms")})


def _take_power(row: dict[str, Any], power: dict[str, Any]) -> None:
    energy = _number(power.get("energy_per_inference_mj"))
    if energy is not None:
        row["energy_mj"] = energy


def _take_accuracy(row: dict[str, Any], acc: dict[str, Any]) -> None:
    task, host, agree = (_dict(acc.get(k)) for k in ("task", "host_task", "agreement"))
    if task:
        row.update(metric=task.get("metric"), value=_number(task.get("value")))
    if host:
        row["host_value"] = _number(host.get("value"))
    if agree:
        row.update(exact_match=_number(agree.get("exact_match_rate")),
                   max_lsb=_number(agree.get("max_abs_diff_lsb")))


def table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table for the terminal (text columns as wide as their longest value)."""
    if not rows:
        return "no results stored yet"
    header = ("device", "arch", "runtime", "model", "n", "p50 ms", "p99 ms", "mJ/inf", "metric",
              "device", "host", "exact", "max LSB")
    keys = ("device", "arch", "runtime", "model", "reports", "p50_ms", "p99_ms", "energy_mj",
            "metric", "value", "host_value", "exact_match", "max_lsb")
    cells = [[_text(r[k]) for k in keys] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = [header, *cells]
    return "\n".join("  ".join(f"{v:<{w}}" if i < 4 else f"{v:>{w}}"
                               for i, (v, w) in enumerate(zip(line, widths))) for line in lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with one header line (COLUMNS)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _latency_panel(ax: Any, x: list[int], rows: list[dict[str, Any]]) -> None:
    """p50 bars labelled with their value; p99 as a marker. The axis follows the p50s (x1.6):
    a p99 far above them is drawn at the top edge with its value, so it cannot flatten the bars."""
    p50 = [r["p50_ms"] or 0.0 for r in rows]
    top = max([*p50, 1e-06]) * 1.6
    ax.bar(x, p50, color="tab:blue", label="p50")
    for k, v in enumerate(p50):
        ax.annotate(f"{v:.3g}", (k, v), ha="center", va="bottom", fontsize=8)
    for k, r in enumerate(rows):
        p99 = r.get("p99_ms")
        if p99 is None:
            continue
        ax.scatter([k], [min(p99, top * 0.97)], marker="v" if p99 > top else "_", s=120,
                   color="black", label="p99" if k == 0 else None, zorder=3)
        if p99 > top:
            ax.annotate(f"p99 {p99:.3g}", (k, top * 0.97), ha="center", va="top", fontsize=7,
                        xytext=(0, -8), textcoords="offset points")
    ax.set_ylim(0, top)
    ax.set_title("latency (ms): p50 bar, p99 marker", fontsize=9)
    ax.legend(loc="upper right", fontsize=7)


def _metric_panel(ax: Any, x: list[int], rows: list[dict[str, Any]]) -> None:
    """Device metric bars with values, the host's as a line; the axis zooms to the values."""
    values = [r["value"] for r in rows]
    hosts = [r["host_value"] for r in rows]
    known = [v for v in values + hosts if v is not None]
    ax.bar(x, [v if v is not None else 0 for v in values], color="tab:green", label="device")
    ax.scatter(x, [h if h is not None else float("nan") for h in hosts], color="black",
               marker="_", s=400, label="host reference", zorder=3)
    for k, v in enumerate(values):
        if v is not None:
            ax.annotate(f"{v:.4g}", (k, v), ha="center", va="bottom", fontsize=8)
    if known:
        lo, hi = min(known), max(known)
        pad = max((hi - lo) * 0.5, abs(hi) * 0.02, 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_title(f"{next((r['metric'] for r in rows if r['metric']), 'metric')} on the eval set "
                 "(axis zoomed)", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Three panels per (device, model): latency (p50 bar, p99 marker), task metric on the
    device vs the host's, and the share of samples bit-exact with the host (max LSB on top)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    from edgeq.fsutil import write_atomic

    labels = [f"{r['device']}\n{r['model']}" for r in rows]
    x = list(range(len(rows)))
    fig = Figure(figsize=(max(10, 2.2 * len(rows) + 5), 4.8))
    ax_lat, ax_acc, ax_agree = fig.subplots(1, 3)
    _latency_panel(ax_lat, x, rows)
    _metric_panel(ax_acc, x, rows)
    exact = [100 * (r["exact_match"] or 0) for r in rows]
    ax_agree.bar(x, exact, color="tab:orange")
    for k, r in enumerate(rows):
        text = f"{exact[k]:.1f}%" + (f"\nmax {r['max_lsb']} LSB" if r["max_lsb"] is not None else "")
        ax_agree.annotate(text, (k, exact[k]), ha="center", va="bottom", fontsize=8)
    ax_agree.set_ylim(0, 120)
    ax_agree.set_title("% of samples bit-exact with the host", fontsize=9)
    for ax in (ax_lat, ax_acc, ax_agree):
        ax.set_xticks(x, labels, fontsize=7, rotation=25, ha="right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(path), buffer.getvalue())
    return Path(path)
