"""Keys derived from the secret key: encryption of upstream credentials at rest (Fernet) and
HMAC signatures (CSRF tokens). Plaintext handed in here never reaches a log or a repr.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tokenmanager.errors import ConfigurationError


def _derive(secret_key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret_key.encode("utf-8")
    )


class Keyring:
    """Everything the secret key is used for, each with its own derived key."""

    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret_key, b"tm/credentials/v1")))
        self._signing_key = _derive(secret_key, b"tm/signing/v1")

    def __repr__(self) -> str:
        return "Keyring(<secret>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """ConfigurationError if the ciphertext was made with another secret key."""
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ConfigurationError(
                "an upstream credential cannot be decrypted: the secret key changed since it "
                "was stored; restore the old TOKENMANAGER_SECRET_KEY or set the credential again"
            ) from None

    def sign(self, message: str) -> str:
        return hmac.new(self._signing_key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def verify_signature(self, message: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(message), signature)
