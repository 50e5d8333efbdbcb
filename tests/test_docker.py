"""docker/: no Docker engine runs here, so check what can be checked without one — the compose
file parses and names only things that exist, the images install extras pyproject.toml defines,
and the example broker config starts the real mosquitto."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from mqtt_env import Mosquitto

DOCKER = REPO / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts (not named volumes)."""
    mounts = []
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_compose_names_only_files_and_volumes_that_exist(compose: dict) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _ in bind_mounts(service):
            assert (DOCKER / source).exists(), f"{name}: mounts missing {source}"
        named = {v.split(":")[0] for v in service.get("volumes", [])} - {s for s, _ in bind_mounts(service)}
        assert named <= declared, f"{name}: undeclared volumes {named - declared}"
        build = service.get("build")
        if build:
            context = DOCKER / build["context"]
            assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"


def test_each_agent_logs_in_as_its_device_with_files_it_can_see(compose: dict) -> None:
    users = compose["services"]["mosquitto-passwd"]["environment"]["USERS"].split()
    agents = {n: s for n, s in compose["services"].items() if n.startswith("agent-")}
    assert len(agents) >= 2
    for name, service in agents.items():
        args = dict(zip(service["command"][::2], service["command"][1::2]))
        assert args["--device-id"] == args["--username"] == name  # the ACL's %u is the device
        assert name in users
        targets = [t for _, t in bind_mounts(service)]
        for option in ("--password-file", "--trust-key"):
            assert any(args[option].startswith(t + "/") for t in targets), (name, option)


def test_dockerfiles_copy_real_paths_and_install_defined_extras() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for dockerfile in sorted(DOCKER.glob("*.Dockerfile")):
        text = dockerfile.read_text()
        for line in re.findall(r"^COPY (.+)$", text, re.M):
            for source in shlex.split(line)[:-1]:
                assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}"
        wanted = ",".join(re.findall(r"'\.\[([a-z,]+)\]'", text)).split(",")
        assert wanted != [""], f"{dockerfile.name} installs no extra"
        for extra in wanted:
            assert extra in extras, f"{dockerfile.name}: extra {extra} not in pyproject"
            assert not any("tensorflow" in d for d in extras[extra]), f"{extra} pulls TensorFlow"


def test_example_broker_config_starts_the_real_mosquitto(tmp_path: Path) -> None:
    conf = (DOCKER / "mosquitto" / "mosquitto.conf").read_text()
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    conf = (conf.replace("listener 1883", "")
            .replace("/mosquitto/config/passwd-dir/passwd", str(passwd))
            .replace("/mosquitto/config/acl", str(DOCKER / "mosquitto" / "acl"))
            .replace("/mosquitto/data/", f"{tmp_path}/"))
    broker = Mosquitto(tmp_path / "b", extra_conf=conf, defaults=False).start()  # or raises
    broker.stop()
