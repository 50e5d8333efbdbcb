"""Firmware templates (firmware_templates/<target>/ + common/) rendered with `{{key}}` values."""

from __future__ import annotations

import re
from pathlib import Path

from edgeq.errors import InputError

TARGETS = ("generic", "arduino", "zephyr", "esp-idf")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def templates_dir() -> Path:
    """firmware_templates/ beside the package (source tree) or inside it (wheel)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "firmware_templates", package.parent / "firmware_templates"):
        if (candidate / "common").is_dir():
            return candidate
    raise InputError("firmware templates not found (expected firmware_templates/ next to edgeq)")


def render_target(target: str, values: dict[str, str]) -> dict[str, str]:
    """Relative path -> rendered text for the common files and the target's files."""
    if target not in TARGETS:
        raise InputError(f"unknown target '{target}'; expected one of {', '.join(TARGETS)}")
    root = templates_dir()
    files = {}
    for folder in (root / "common", root / target):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = str(path.relative_to(folder))
            if relative == "sketch.ino":
                relative = f"{values['sketch']}.ino"
            files[relative] = render(path.read_text(), values, f"{target}/{relative}")
    return files


def render(text: str, values: dict[str, str], source: str) -> str:
    """Replace every {{key}}; a key without a value is a template bug, reported as such."""
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise InputError(f"firmware template {source} uses unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(value, text)
