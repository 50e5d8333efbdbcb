"""Power and energy behind one `PowerProbe` protocol, sampled in a thread during an idle window
and a busy window. With no sensor the report says why and holds nulls — never a made-up number.

Sources and their units (Linux sysfs ABI unless noted):
- rapl: /sys/class/powercap/intel-rapl:N/energy_uj, a cumulative counter in uJ that wraps at
  max_energy_range_uj; package domains are summed (sub-domains would double count).
- hwmon: INA2xx/INA3221 current-sense chips, power1_input in uW, else in<k>_input (mV) x
  curr<k>_input (mA) summed over channels.
- power_supply: a discharging battery, power_now (uW) or current_now (uA) x voltage_now (uV).
  Vendors differ in sign (charge vs discharge) and some Android kernels report mA and mV:
  magnitudes are used and units are recognised by size (noted in the report).
- pi5: `vcgencmd pmic_read_adc` on a Raspberry Pi 5: rails printed as NAME_A current(n)=..A and
  NAME_V volt(n)=..V, paired by name and summed (the PMIC does not see the 5 V input itself).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import AgentError

SOURCES = ("rapl", "hwmon", "power_supply", "pi5", "termux")
# termux-battery-status asks Android through the Termux:API app: ~0.3-1 s per call
DEFAULT_INTERVAL_S = {"rapl": 0.05, "hwmon": 0.05, "power_supply": 0.1, "pi5": 0.1, "termux": 1.0,
                      "adb-battery": 0.3}  # one adb call per sample


class ProbeUnavailable(AgentError, RuntimeError):
    """A power source is absent or unreadable here; the text says why."""


@dataclass(frozen=True)
class Reading:
    """One sample: instantaneous watts, or a cumulative energy counter in joules."""

    t: float
    watts: float | None = None
    joules: float | None = None


@runtime_checkable
class PowerProbe(Protocol):
    """A power source. `read()` raises ProbeUnavailable when the source stops answering."""

    @property
    def name(self) -> str: ...

    @property
    def notes(self) -> tuple[str, ...]: ...

    def read(self) -> Reading: ...


def _read_number(path: Path) -> float:
    try:
        return float(path.read_text().strip())
    except PermissionError as e:
        raise ProbeUnavailable(f"permission denied reading {path} (run the agent as root or "
                               "grant read access)") from e
    except (OSError, ValueError) as e:
        raise ProbeUnavailable(f"cannot read {path}: {e}") from e


class RaplProbe:
    """Intel/AMD RAPL package energy counters (wrap-around handled per domain)."""

    name = "rapl"

    def __init__(self, root: Path = Path("/sys/class/powercap"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.domains = sorted(p for p in Path(root).glob("intel-rapl:*")
                              if p.name.count(":") == 1 and (p / "energy_uj").exists())
        if not self.domains:
            raise ProbeUnavailable(f"no RAPL package domains under {root}")
        self.ranges = [_read_number(d / "max_energy_range_uj") for d in self.domains]
        self.last = [_read_number(d / "energy_uj") for d in self.domains]
        self.total_uj = 0.0
        self.clock = clock
        self.notes = (f"{len(self.domains)} package domain(s): "
                      + ", ".join(_domain_name(d) for d in self.domains),)

    def read(self) -> Reading:
        for k, domain in enumerate(self.domains):
            raw = _read_number(domain / "energy_uj")
            delta = raw - self.last[k]
            if delta < 0:  # the counter wrapped at max_energy_range_uj
                delta += self.ranges[k]
            self.total_uj += delta
            self.last[k] = raw
        return Reading(self.clock(), joules=self.total_uj / 1e6)


def _domain_name(domain: Path) -> str:
    try:
        return (domain / "name").read_text().strip()
    except OSError:
        return domain.name


class HwmonProbe:
    """INA2xx-family current-sense chips exposed through hwmon."""

    name = "hwmon"

    def __init__(self, root: Path = Path("/sys/class/hwmon"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        chips = [d for d in sorted(Path(root).glob("hwmon*")) if _chip_name(d).startswith("ina")]
        if not chips:
            raise ProbeUnavailable(f"no INA2xx/INA3221 power monitor under {root}")
        self.chip = chips[0]
        self.clock = clock
        self.channels = sorted({int(m.group(1)) for p in self.chip.glob("curr*_input")
                                if (m := re.match(r"curr(\d+)_input$", p.name))})
        if not (self.chip / "power1_input").exists() and not self.channels:
            raise ProbeUnavailable(f"{self.chip} ({_chip_name(self.chip)}) has neither power1_input "
                                   "nor curr*_input")
        self.notes = (f"{_chip_name(self.chip)} at {self.chip.name}",)
        self.read()

    def read(self) -> Reading:
        if (self.chip / "power1_input").exists():
            return Reading(self.clock(), watts=_read_number(self.chip / "power1_input") / 1e6)
        watts = sum(_read_number(self.chip / f"in{c}_input") / 1e3
                    * abs(_read_number(self.chip / f"curr{c}_input")) / 1e3 for c in self.channels)
        return Reading(self.clock(), watts=watts)


def _chip_name(d: Path) -> str:
    try:
        return (d / "name").read_text().strip().lower()
    except OSError:
        return ""


class PowerSupplyProbe:
    """A discharging battery: what the whole device draws from it."""

    name = "power_supply"

    def __init__(self, root: Path = Path("/sys/class/power_supply"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        batteries = [d for d in sorted(Path(root).glob("*")) if _text(d / "type") == "Battery"]
        if not batteries:
            raise ProbeUnavailable(f"no battery under {root}")
        self.battery = batteries[0]
        status = _text(self.battery / "status")
        if status not in ("Discharging", "Not charging"):
            state = status or "in an unknown state"
            raise ProbeUnavailable(f"battery {self.battery.name} is {state}: on external power it "
                                   "does not see what the device draws; unplug the charger to "
                                   "measure")
        self.clock = clock
        self.units: set[str] = set()
        self.read()
        self.notes = (f"battery {self.battery.name}; magnitudes used (vendors differ in sign)",
                      *sorted(self.units))

    def read(self) -> Reading:
        if (self.battery / "power_now").exists():
            return Reading(self.clock(), watts=abs(_read_number(self.battery / "power_now")) / 1e6)
        current = abs(_read_number(self.battery / "current_now"))
        voltage = abs(_read_number(self.battery / "voltage_now"))
        amps = current / 1e6 if current >= 10_000 else current / 1e3
        volts = voltage / 1e6 if voltage >= 100_000 else voltage / 1e3 if voltage >= 100 else voltage
        if current and current < 10_000:
            self.units.add("current_now read as mA (value below 10000; the ABI unit is uA)")
        if voltage < 100_000:
            self.units.add("voltage_now read as mV or V (value below 100000; the ABI unit is uV)")
        return Reading(self.clock(), watts=amps * volts)


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-0-9.eE+]+)[AV]\s*$")


def parse_pmic(text: str) -> dict[str, tuple[float, float]]:
    """`vcgencmd pmic_read_adc` output -> {rail: (amps, volts)} for rails with both."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if m:
            (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
    return {rail: (amps[rail], volts[rail]) for rail in sorted(set(amps) & set(volts))}


class Pi5PmicProbe:
    """Raspberry Pi 5 PMIC rails (one `vcgencmd` process per sample: sample at <= 10 Hz)."""

    name = "pi5"

    def __init__(self, run: Callable[[], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if run is None:
            if shutil.which("vcgencmd") is None:
                raise ProbeUnavailable("vcgencmd not found (not a Raspberry Pi 5 with firmware "
                                       "tools)")
            run = _vcgencmd
        self.run = run
        self.clock = clock
        rails = parse_pmic(self.run())
        if not rails:
            raise ProbeUnavailable("vcgencmd pmic_read_adc printed no current/voltage rail pairs "
                                   "(the PMIC ADC exists on the Raspberry Pi 5 only)")
        self.notes = (f"sum of {len(rails)} PMIC rails; excludes 5 V peripherals and conversion "
                      "losses",)

    def read(self) -> Reading:
        rails = parse_pmic(self.run())
        if not rails:
            raise ProbeUnavailable("vcgencmd pmic_read_adc stopped printing rails")
        return Reading(self.clock(), watts=sum(a * v for a, v in rails.values()))


def _vcgencmd() -> str:
    try:
        return subprocess.run(["vcgencmd", "pmic_read_adc"], capture_output=True, text=True,
                              timeout=2, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ProbeUnavailable(f"vcgencmd pmic_read_adc failed: {e}") from e


def parse_termux_battery(text: str) -> tuple[str, float | None, float | None]:
    """`termux-battery-status` JSON -> (status, amps, volts); `current` is in uA and `voltage`
    in mV (Termux:API versions before voltage was added give None for it)."""
    try:
        info = json.loads(text)
    except ValueError as e:
        raise ProbeUnavailable(f"termux-battery-status printed no JSON ({e})") from None
    if not isinstance(info, dict):
        raise ProbeUnavailable("termux-battery-status printed no JSON object")

    def number(key: str, scale: float) -> float | None:
        value = info.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return abs(float(value)) / scale if ok and value else None
    return str(info.get("status", "")), number("current", 1e6), number("voltage", 1e3)


class TermuxBatteryProbe:
    """A phone's battery through Termux:API (`pkg install termux-api` and the Termux:API app):
    what the whole phone draws, sampled at about 1 Hz."""

    name = "termux"

    def __init__(self, run: Callable[[], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if run is None:
            if shutil.which("termux-battery-status") is None:
                raise ProbeUnavailable("termux-battery-status not found (in Termux: pkg install "
                                       "termux-api, and install the Termux:API app)")
            run = _termux_battery
        self.run, self.clock = run, clock
        status, amps, volts = parse_termux_battery(self.run())
        if status not in ("DISCHARGING", "NOT_CHARGING"):
            raise ProbeUnavailable(f"battery is {status or 'in an unknown state'}: on a charger "
                                   "it does not see what the phone draws; unplug to measure")
        if amps is None or volts is None:
            raise ProbeUnavailable("termux-battery-status gives no current or voltage (update "
                                   "the Termux:API app)")
        self.notes = ("Termux:API battery current x voltage, magnitudes (vendors differ in sign); "
                      "~1 Hz",)

    def read(self) -> Reading:
        _, amps, volts = parse_termux_battery(self.run())
        if amps is None or volts is None:
            raise ProbeUnavailable("termux-battery-status stopped giving current and voltage")
        return Reading(self.clock(), watts=amps * volts)


def _termux_battery() -> str:
    try:
        return subprocess.run(["termux-battery-status"], capture_output=True, text=True,
                              timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ProbeUnavailable(f"termux-battery-status failed: {e}") from e


def probe_registry() -> dict[str, Callable[..., PowerProbe]]:
    """Probe constructors by source name, in `auto` preference order (whole-board sensors
    before SoC-only counters; a phone's battery last)."""
    return {"hwmon": HwmonProbe, "pi5": Pi5PmicProbe, "rapl": RaplProbe,
            "power_supply": PowerSupplyProbe, "termux": TermuxBatteryProbe}


def detect_probe(choice: str = "auto",
                 registry: dict[str, Callable[..., PowerProbe]] | None = None
                 ) -> tuple[PowerProbe | None, str]:
    """(probe, '') for the chosen or first working source, else (None, why not)."""
    registry = registry or probe_registry()
    if choice == "none":
        return None, "power measurement disabled (--power none)"
    if choice != "auto" and choice not in registry:
        raise ValueError(f"unknown power source '{choice}'; known: auto, {', '.join(registry)}, none")
    reasons = []
    for name in (registry if choice == "auto" else [choice]):
        try:
            return registry[name](), ""
        except ProbeUnavailable as e:
            reasons.append(f"{name}: {e}")
    return None, "no power sensor: " + "; ".join(reasons)


class Sampler:
    """Reads a probe every `interval` seconds in a thread while the block runs."""

    def __init__(self, probe: PowerProbe, interval: float) -> None:
        self.probe, self.interval = probe, interval
        self.readings: list[Reading] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.readings.append(self.probe.read())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.readings.append(self.probe.read())
        except ProbeUnavailable as e:
            self.error = str(e)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.readings.append(self.probe.read())
            except ProbeUnavailable as e:
                self.error = str(e)
                return


def window_watts(readings: list[Reading]) -> float | None:
    """Mean power over a window: energy delta / time for counters, mean of instantaneous power."""
    first, last = (readings[0].joules, readings[-1].joules) if readings else (None, None)
    if first is not None:
        if len(readings) < 2 or last is None or readings[-1].t <= readings[0].t:
            return None
        return (last - first) / (readings[-1].t - readings[0].t)
    watts = [r.watts for r in readings if r.watts is not None]
    return sum(watts) / len(watts) if watts else None


def measure_power(probe: PowerProbe | None, reason: str, window_s: float,
                  busy: Callable[[float], int],
                  wait: Callable[[float], Any] = time.sleep) -> dict[str, Any]:
    """Idle window (`wait(seconds)`), then a busy window in which `busy(seconds)` runs
    inferences and returns how many it ran. Energy per inference is busy power x busy time /
    inferences; the dynamic part subtracts idle power."""
    if probe is None:
        return unavailable_power(reason)
    interval = DEFAULT_INTERVAL_S.get(probe.name, 0.1)
    try:
        with Sampler(probe, interval) as idle:
            wait(window_s)
        with Sampler(probe, interval) as active:
            t0 = time.perf_counter()
            count = busy(window_s)
            busy_s = time.perf_counter() - t0
    except ProbeUnavailable as e:
        return unavailable_power(str(e), probe.name)
    idle_w, busy_w = window_watts(idle.readings), window_watts(active.readings)
    if idle_w is None or busy_w is None or count == 0:
        return unavailable_power(idle.error or active.error or "too few power samples", probe.name)
    per_inference_s = busy_s / count
    return {"source": probe.name, "idle_w": round(idle_w, 6), "busy_w": round(busy_w, 6),
            "energy_per_inference_mj": round(busy_w * per_inference_s * 1e3, 6),
            "dynamic_energy_per_inference_mj": round((busy_w - idle_w) * per_inference_s * 1e3, 6),
            "inferences": count, "window_s": window_s,
            "samples": {"idle": len(idle.readings), "busy": len(active.readings)},
            "interval_s": interval, "notes": list(probe.notes), "reason": None}


def unavailable_power(reason: str, source: str = "none") -> dict[str, Any]:
    """The report when power cannot be measured: nulls and why."""
    return {"source": source, "idle_w": None, "busy_w": None, "energy_per_inference_mj": None,
            "dynamic_energy_per_inference_mj": None, "inferences": None, "samples": None,
            "reason": reason}
