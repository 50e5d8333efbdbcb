"""Print one line per report.json under a directory: mode, size, SQNR, task metric, TFLM."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: Path) -> None:
    print(f"{'conversion':<30} {'bytes':>8} {'int16 ops':>9} {'SQNR dB':>8} {'task':>16} "
          f"{'TFLM':>14}")
    for path in sorted(root.glob("*/report.json")):
        r = json.loads(path.read_text())
        task = r["metrics"].get("task")
        task_text = f"{task['metric']} {task['value']:.3f}" if task else "-"
        tflm = r["tflm"]
        tflm_text = f"ok, {tflm['max_abs_diff_lsb']} LSB" if tflm["runs"] else "fails"
        print(f"{path.parent.name:<30} {r['model']['bytes']:>8,} {r['summary']['int16_ops']:>9} "
              f"{r['metrics']['sqnr_db']:>8.2f} {task_text:>16} {tflm_text:>14}")
    print(f"\nreports, models and plans: {root}/*/")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo"))
