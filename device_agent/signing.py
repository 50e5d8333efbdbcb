"""Ed25519 signatures on deploy bundles: the host signs, the agent trusts one enrolled key.

What is signed is a domain-separated statement of the bundle's sha256, so a signature made for
an edgeq bundle can never be replayed as anything else.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

DOMAIN = b"edgeq-bundle-v1\n"
PRIVATE_NAME, PUBLIC_NAME = "host.key", "host.pub"


class SignatureError(ValueError):
    """A key file is unusable or a signature does not verify."""


def _statement(bundle_sha256: str) -> bytes:
    return DOMAIN + bundle_sha256.encode()


def generate_keys(directory: Path) -> tuple[Path, Path]:
    """Write DIR/host.key (PKCS#8 PEM, mode 0600) and DIR/host.pub; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"{path} already exists; refusing to overwrite a key")
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def sign(private_key_path: Path, bundle_sha256: str) -> str:
    """Base64 Ed25519 signature of the bundle hash."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise SignatureError(f"{private_key_path}: not a readable unencrypted PEM private key "
                             f"({e}); make one with `edgeq keys generate`") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{private_key_path}: not an Ed25519 key")
    return base64.b64encode(key.sign(_statement(bundle_sha256))).decode()


def load_public_key(path: Path):  # noqa: ANN201 - cryptography's Ed25519PublicKey
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


def verify(public_key, bundle_sha256: str, signature_b64: str) -> None:  # noqa: ANN001
    """Raise SignatureError unless `signature_b64` signs `bundle_sha256` with `public_key`."""
    from cryptography.exceptions import InvalidSignature

    if not signature_b64:
        raise SignatureError("bundle is not signed; deploy with `edgeq deploy --key host.key`")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, _statement(bundle_sha256))
    except (InvalidSignature, ValueError) as e:
        raise SignatureError("signature does not match the trusted host key") from e


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
