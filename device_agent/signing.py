"""Ed25519 signatures: the host signs, the agent trusts one enrolled key.

What is signed is a statement (canonical JSON, domain-separated) in the style of TUF / Mender /
AWS IoT Jobs: what to do (`kind`: deploy or rollback), for which device (`target`), a sequence
number that only grows (`seq`: the agent refuses anything not newer than what it accepted, so
an old captured deploy cannot be replayed or a model downgraded), when it was issued and when it
expires, which key signed it (`key_id`) and what it acts on (bundle and model sha256, or the
model to roll back to).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import AgentError

DOMAIN = b"edgeq-statement-v2\n"
PRIVATE_NAME, PUBLIC_NAME = "host.key", "host.pub"
STATEMENT_FIELDS = ("kind", "target", "seq", "issued", "expires", "key_id")


class SignatureError(AgentError, ValueError):
    """A key file is unusable or a signature does not verify."""


def canonical(statement: dict[str, Any]) -> bytes:
    """The signed bytes of a statement: domain + sorted, compact JSON."""
    return DOMAIN + json.dumps(statement, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=True, allow_nan=False).encode()


def generate_keys(directory: Path) -> tuple[Path, Path]:
    """Write DIR/host.key (PKCS#8 PEM, mode 0600) and DIR/host.pub; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise SignatureError(f"{path} already exists (or is a link); refusing to overwrite a key")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SignatureError(f"cannot create {directory}: {e.strerror}") from e
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public_pem)
    except OSError as e:
        raise SignatureError(f"cannot write the key pair in {directory}: {e.strerror}") from e
    return private_path, public_path


def _private_key(private_key_path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise SignatureError(f"{private_key_path}: not a readable unencrypted PEM private key "
                             f"({e}); make one with `edgeq keys generate`") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{private_key_path}: not an Ed25519 key")
    return key


def key_id(public_key) -> str:
    """First 16 hex digits of the sha256 of the raw public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def authorize(private_key_path: Path, kind: str, target: str, lifetime_s: float,
              **fields: Any) -> dict[str, Any]:
    """A signed statement: {kind, target, seq, issued, expires, key_id, **fields, signature}.

    `seq` is the next number of this key's sequence (see next_sequence)."""
    key = _private_key(private_key_path)
    now = time.time()
    statement = {"kind": kind, "target": target, "seq": next_sequence(private_key_path),
                 "issued": round(now, 3), "expires": round(now + lifetime_s, 3),
                 "key_id": key_id(key.public_key()), **fields}
    signature = base64.b64encode(key.sign(canonical(statement))).decode()
    return {**statement, "signature": signature}


def next_sequence(private_key_path: Path) -> int:
    """Milliseconds since the epoch, and always above the last number this key issued (kept in
    KEY.seq beside the key when it is writable): grows across hosts with synced clocks and
    across restarts of one host."""
    path = Path(f"{private_key_path}.seq")
    try:
        last = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        last = 0
    seq = max(int(time.time() * 1000), last + 1)
    with contextlib.suppress(OSError):  # read-only key directory: the clock alone orders them
        path.write_text(f"{seq}\n")
    return seq


def verify_statement(public_key, statement: dict[str, Any]) -> None:
    """Raise SignatureError unless `statement['signature']` signs the rest of it."""
    from cryptography.exceptions import InvalidSignature

    signature_b64 = statement.get("signature")
    if not signature_b64 or not isinstance(signature_b64, str):
        raise SignatureError("not signed; deploy with `edgeq deploy --key host.key`")
    body = {k: v for k, v in statement.items() if k != "signature"}
    missing = [k for k in STATEMENT_FIELDS if k not in body]
    if missing:
        raise SignatureError(f"the signature does not cover {', '.join(missing)}: signed by an "
                             "older edgeq; sign again with this version")
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), canonical(body))
    except (InvalidSignature, ValueError, TypeError) as e:
        raise SignatureError("signature does not match the trusted host key") from e


def load_public_key(path: Path):
    """The trusted host key (PEM) the agent checks every bundle against."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise SignatureError(f"{path}: not a readable PEM public key ({e})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key")
    return key


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
