"""Power probes on fixture sysfs trees and recorded `vcgencmd` output: units, signs, wrap-around,
and honest nulls when there is no sensor."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.power import (
    HwmonProbe,
    Pi5PmicProbe,
    PowerProbe,
    PowerSupplyProbe,
    ProbeUnavailable,
    RaplProbe,
    Reading,
    TermuxBatteryProbe,
    detect_probe,
    measure_power,
    parse_pmic,
    window_watts,
)

# The line format `vcgencmd pmic_read_adc` prints on a Raspberry Pi 5 (rail names as the firmware
# prints them, values illustrative; no Pi 5 here to record one). EXT5V_V and BATT_V have a voltage
# and no current, so they are not rails the sum can use.
PI5_OUTPUT = """\
   3V3_SYS_A current(1)=0.05466000A
   1V8_SYS_A current(2)=0.16200000A
  VDD_CORE_A current(7)=0.68330000A
     HDMI_A current(22)=0.01476000A
   3V3_SYS_V volt(9)=3.31060500V
   1V8_SYS_V volt(10)=1.79950100V
  VDD_CORE_V volt(15)=0.72030000V
     HDMI_V volt(23)=5.15784000V
    EXT5V_V volt(24)=5.14736000V
     BATT_V volt(25)=0.00439600V
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


class Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rapl_sums_packages_ignores_subzones_and_unwraps(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "intel-rapl:0/name": "package-0", "intel-rapl:0/energy_uj": "999000000",
        "intel-rapl:0/max_energy_range_uj": "1000000000",
        "intel-rapl:0:0/name": "core", "intel-rapl:0:0/energy_uj": "5",  # inside package-0
        "intel-rapl:0:0/max_energy_range_uj": "1000000000",
        "intel-rapl:1/name": "package-1", "intel-rapl:1/energy_uj": "0",
        "intel-rapl:1/max_energy_range_uj": "1000000000"})
    clock = Clock()
    probe = RaplProbe(root, clock)
    assert isinstance(probe, PowerProbe) and len(probe.domains) == 2
    first = probe.read()
    clock.t += 2.0
    # package-0 wrapped: 999 J -> 1 J through 1000 J is +2 J; package-1 +4 J
    write(root, {"intel-rapl:0/energy_uj": "1000000", "intel-rapl:1/energy_uj": "4000000"})
    second = probe.read()
    assert second.joules - first.joules == pytest.approx(6.0)
    assert window_watts([first, second]) == pytest.approx(3.0)


def test_rapl_unreadable_counter_says_why(tmp_path: Path) -> None:
    root = write(tmp_path, {"intel-rapl:0/max_energy_range_uj": "10"})
    (root / "intel-rapl:0/energy_uj").mkdir()  # exists but cannot be read as a number
    with pytest.raises(ProbeUnavailable, match="cannot read"):
        RaplProbe(root)


@pytest.mark.parametrize("files,watts", [
    # (hwmon files of one chip, expected W)
    ({"name": "ina219", "power1_input": "2350000"}, 2.35),  # uW
    ({"name": "ina3221", "in1_input": "5000", "curr1_input": "400",  # mV x mA per channel
      "in2_input": "3300", "curr2_input": "-100"}, 5.0 * 0.4 + 3.3 * 0.1),
])
def test_hwmon_ina_units(tmp_path: Path, files: dict[str, str], watts: float) -> None:
    root = write(tmp_path, {"hwmon0/name": "coretemp", "hwmon0/temp1_input": "40000",
                            **{f"hwmon3/{k}": v for k, v in files.items()}})
    probe = HwmonProbe(root)
    assert probe.read().watts == pytest.approx(watts)
    assert "hwmon3" in probe.notes[0]


def test_hwmon_without_a_power_monitor(tmp_path: Path) -> None:
    root = write(tmp_path, {"hwmon0/name": "coretemp"})
    with pytest.raises(ProbeUnavailable, match="no INA2xx"):
        HwmonProbe(root)


@pytest.mark.parametrize("files,watts,unit_note", [
    # (battery files, expected W, a unit note expected in the probe's notes)
    ({"current_now": "-500000", "voltage_now": "3800000"}, 1.9, None),  # uA negative, uV
    ({"current_now": "500000", "voltage_now": "3800000"}, 1.9, None),  # other vendor's sign
    ({"current_now": "-480", "voltage_now": "3950"}, 0.48 * 3.95, "read as mA"),  # mA and mV
    ({"power_now": "2500000", "current_now": "1", "voltage_now": "1"}, 2.5, None),  # uW wins
])
def test_battery_signs_and_units(tmp_path: Path, files: dict[str, str], watts: float,
                                 unit_note: str | None) -> None:
    root = write(tmp_path, {"AC/type": "Mains", "BAT0/type": "Battery",
                            "BAT0/status": "Discharging",
                            **{f"BAT0/{k}": v for k, v in files.items()}})
    probe = PowerSupplyProbe(root)
    assert probe.read().watts == pytest.approx(watts)
    if unit_note:
        assert any(unit_note in note for note in probe.notes)


def test_charging_battery_cannot_measure_the_device(tmp_path: Path) -> None:
    root = write(tmp_path, {"BAT0/type": "Battery", "BAT0/status": "Charging",
                            "BAT0/current_now": "1000000", "BAT0/voltage_now": "4000000"})
    with pytest.raises(ProbeUnavailable, match="Charging: on external power"):
        PowerSupplyProbe(root)


def test_pi5_pmic_pairs_rails_and_skips_voltage_only_lines() -> None:
    rails = parse_pmic(PI5_OUTPUT)
    assert sorted(rails) == ["1V8_SYS", "3V3_SYS", "HDMI", "VDD_CORE"]  # no EXT5V, BATT
    probe = Pi5PmicProbe(run=lambda: PI5_OUTPUT)
    expected = (0.05466 * 3.310605 + 0.162 * 1.799501 + 0.6833 * 0.7203 + 0.01476 * 5.15784)
    assert probe.read().watts == pytest.approx(expected)


def test_pi5_without_pmic_output_is_unavailable() -> None:
    with pytest.raises(ProbeUnavailable, match="no current/voltage rail pairs"):
        Pi5PmicProbe(run=lambda: "error=1 error_msg=\"Command not registered\"\n")


# The JSON `termux-battery-status` prints (field names and units of Termux:API's BatteryStatus:
# current in uA, negative while discharging on most phones, voltage in mV; values illustrative,
# no phone here to record one).
TERMUX_DISCHARGING = ('{"present": true, "technology": "Li-ion", "health": "GOOD", '
                      '"plugged": "UNPLUGGED", "status": "DISCHARGING", "temperature": 29.5, '
                      '"voltage": 3987, "current": -412000, "current_average": -398000, '
                      '"percentage": 71, "level": 71, "scale": 100, "charge_counter": 2871000, '
                      '"energy": null, "cycle": 312}')


def test_termux_battery_current_times_voltage() -> None:
    probe = TermuxBatteryProbe(run=lambda: TERMUX_DISCHARGING)
    assert probe.read().watts == pytest.approx(0.412 * 3.987)
    assert probe.name == "termux" and "magnitudes" in probe.notes[0]


@pytest.mark.parametrize("text,message", [
    (TERMUX_DISCHARGING.replace('"DISCHARGING"', '"CHARGING"'), "battery is CHARGING"),
    (TERMUX_DISCHARGING.replace('"voltage": 3987, ', ""), "no current or voltage"),
    ("termux-api: Termux:API app not installed", "printed no JSON"),
])
def test_termux_battery_says_why_it_cannot_measure(text: str, message: str) -> None:
    with pytest.raises(ProbeUnavailable, match=message):
        TermuxBatteryProbe(run=lambda: text)


def test_no_sensor_gives_nulls_and_every_reason(tmp_path: Path) -> None:
    def missing(name: str):
        def make() -> PowerProbe:
            raise ProbeUnavailable(f"no {name} here")
        return make

    probe, reason = detect_probe("auto", {"rapl": missing("rapl"), "hwmon": missing("hwmon")})
    assert probe is None and "rapl: no rapl here" in reason and "hwmon: no hwmon here" in reason
    report = measure_power(probe, reason, 0.1, busy=lambda s: 1)
    assert report["energy_per_inference_mj"] is None and report["busy_w"] is None
    assert report["reason"] == reason
    assert detect_probe("none")[1].startswith("power measurement disabled")
    with pytest.raises(ValueError, match="unknown power source 'ups'"):
        detect_probe("ups")


class RampProbe:
    """An energy counter rising at idle_w, and at busy_w while `busy` is set."""

    name = "rapl"
    notes = ("test ramp",)

    def __init__(self, idle_w: float, busy_w: float) -> None:
        import time

        self.time = time
        self.idle_w, self.busy_w, self.busy = idle_w, busy_w, False
        self.joules, self.t = 0.0, time.monotonic()

    def read(self) -> Reading:
        now = self.time.monotonic()
        self.joules += (now - self.t) * (self.busy_w if self.busy else self.idle_w)
        self.t = now
        return Reading(now, joules=self.joules)


def test_measure_power_energy_per_inference_from_idle_and_busy_windows() -> None:
    import time

    probe = RampProbe(idle_w=2.0, busy_w=5.0)

    def busy(seconds: float) -> int:
        probe.read()
        probe.busy = True
        end, n = time.perf_counter() + seconds, 0
        while time.perf_counter() < end:
            time.sleep(0.001)
            n += 1
        probe.read()
        probe.busy = False
        return n

    report = measure_power(probe, "", 0.3, busy)
    assert report["idle_w"] == pytest.approx(2.0, rel=0.05)
    assert report["busy_w"] == pytest.approx(5.0, rel=0.1)
    per_inference_s = 0.3 / report["inferences"]
    assert report["energy_per_inference_mj"] == pytest.approx(5.0 * per_inference_s * 1e3, rel=0.15)
    assert report["dynamic_energy_per_inference_mj"] == pytest.approx(3.0 * per_inference_s * 1e3,
                                                                      rel=0.25)
    assert report["samples"]["idle"] >= 3 and report["reason"] is None
