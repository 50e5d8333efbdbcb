"""Deploy bundles and their signatures: what the agent trusts and why."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import bundled

from device_agent.bundle import BundleError, extract_bundle
from device_agent.connection import Broker
from device_agent.signing import SignatureError, authorize, generate_keys, load_public_key, verify_statement
from edgeq.fleet.deploy import DeployConfig, build_bundle


def test_bundle_carries_model_eval_reference_and_reads_back(tmp_path: Path, cnn_int8: Path) -> None:
    cfg = DeployConfig(cnn_int8, "d", Broker("h", 1), Path("k"), bundled("digits_cnn")[2],
                       eval_samples=30)
    meta = build_bundle(cfg, tmp_path / "b.zip")
    assert meta["model"]["sha256"] == hashlib.sha256(cnn_int8.read_bytes()).hexdigest()
    assert meta["eval"]["samples"] == 30 and meta["eval"]["labels"] == "class"
    bundle = extract_bundle(tmp_path / "b.zip", tmp_path / "x")
    inputs, y = bundle.eval_inputs(), bundle.labels()
    assert inputs[0].shape == (30, 8, 8, 1) and y.shape == (30,)
    assert bundle.reference()[0].shape[0] == 30 and bundle.reference()[0].dtype == np.int8
    assert bundle.inputs()[0].dtype == "int8" and bundle.contracts() == {}
    with zipfile.ZipFile(tmp_path / "b.zip") as z:  # stored, not compressed: model bytes as is
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}


def test_tampered_model_inside_a_bundle_is_refused(tmp_path: Path, cnn_int8: Path) -> None:
    build_bundle(DeployConfig(cnn_int8, "d", Broker("h", 1), Path("k")), tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["model.tflite"] = members["model.tflite"][:-1] + b"\x00"
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(BundleError, match=r"does not match bundle.json"):
        extract_bundle(tmp_path / "bad.zip", tmp_path / "x")
    (tmp_path / "junk.zip").write_bytes(b"PK not really")
    with pytest.raises(BundleError, match="not a readable edgeq bundle"):
        extract_bundle(tmp_path / "junk.zip", tmp_path / "y")


def test_signatures_bind_the_statement_to_the_enrolled_key(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path / "host")
    assert private.stat().st_mode & 0o777 == 0o600
    key = load_public_key(public)
    statement = authorize(private, "deploy", "dev1", 60, sha256="ab" * 32)
    verify_statement(key, statement)
    for field, value in (("sha256", "cd" * 32), ("target", "dev2"), ("seq", statement["seq"] + 1),
                         ("expires", statement["expires"] + 3600)):
        with pytest.raises(SignatureError, match="does not match"):
            verify_statement(key, {**statement, field: value})  # every field is covered
    other, _ = generate_keys(tmp_path / "other")
    with pytest.raises(SignatureError, match="does not match"):
        verify_statement(key, authorize(other, "deploy", "dev1", 60, sha256="ab" * 32))
    with pytest.raises(SignatureError, match="not signed"):
        verify_statement(key, {**statement, "signature": ""})
    assert authorize(private, "deploy", "dev1", 60)["seq"] > statement["seq"]  # only grows
    with pytest.raises(SignatureError, match="refusing to overwrite"):
        generate_keys(tmp_path / "host")
    with pytest.raises(SignatureError, match="not a readable PEM public key"):
        load_public_key(private.with_name("missing.pub"))
