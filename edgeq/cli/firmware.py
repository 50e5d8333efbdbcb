"""`edgeq firmware run`: the exported firmware built against TFLite Micro's C++ and run (thin
click layer over edgeq.micro.firmware)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeq.cli.commands import cli


@cli.group("firmware")
def firmware_group() -> None:
    """Build and run exported firmware on real TFLite Micro C++ (host or emulated Cortex-M4)."""


@firmware_group.command("run")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--tflm", required=True, type=click.Path(path_type=Path),
              help="A tflite-micro source tree with its third-party downloads in place.")
@click.option("--target", type=click.Choice(["host", "cortex-m4"]), default="host",
              show_default=True, help="host: native, TFLM's reference kernels; cortex-m4: "
                                      "qemu-system-arm mps2-an386, CMSIS-NN kernels.")
@click.option("--timeout", type=click.FloatRange(10, 7200), default=600.0, show_default=True,
              help="Seconds each step may take (the TFLM library build: 3x).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def run_cmd(out: Path, tflm: Path, target: str, timeout: float, as_json: bool) -> None:
    """Build OUT (from `edgeq export micro --target generic --golden ...`) against TFLM, run
    it on the golden inputs and compare with the host's outputs.

    Exit 0 within the export's tolerance; 1 a step failed or outputs differ (the step is
    named); 2 bad input."""
    from edgeq.cli.render import firmware_summary
    from edgeq.micro.firmware import FirmwareConfig, firmware_run

    report = firmware_run(FirmwareConfig(out, tflm, target, timeout))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else firmware_summary(report))
    sys.exit(0 if report.passed else 1)
