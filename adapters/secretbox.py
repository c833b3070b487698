"""Secrets the ledger must keep in its database, sealed: AES-256-GCM under a data key read from a file.

Two secrets cannot be hashed away because the ledger uses them: a payer's
mini-program ``session_key`` (to decrypt what the mini-program sends later) and
a webhook endpoint's signing secret (to sign every delivery).  Kept sealed, a
``pg_dump``, a backup or a copy of the SQLite file and its WAL holds none of
them in clear; the key that opens them lives in a file beside the others
(``data_key_file``, written by ``zhangben keys init``, mode 0600).

The file is a keyring, one key per line (``<kid> <64 hex digits>``), the first
the one that seals; the others still open what they sealed.  ``zhangben keys
rotate-data-key`` puts a new key first and seals every stored secret again
under it (``reseal``); processes notice the changed file by themselves.  Each
sealed value is bound to its row (the AEAD's associated data), so one row's
sealed secret cannot be copied into another's.

Format of a sealed value: ``zb1:<kid>:<base64url(nonce ‖ ciphertext ‖ tag)>``.
https://cryptography.io/en/latest/hazmat/primitives/aead/#cryptography.hazmat.primitives.ciphers.aead.AESGCM
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.errors import Conflict

PREFIX = "zb1"
_LINE = re.compile(r"^([0-9a-f]{8}) ([0-9a-f]{64})$")


class DataKeyError(Exception):
    """The data key file is missing, unreadable, too open, or does not open a sealed value."""


class NoDataKey(Conflict):
    """A secret was to be stored, but no data key is configured: it is never stored in clear."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs a data key to be kept (secrets are never stored in clear): set data_key_file "
            "in zhangben.toml (`zhangben keys init` writes one; docs/going-live.md)"
        )


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX + ":")


def new_key_line() -> str:
    return f"{secrets.token_hex(4)} {secrets.token_hex(32)}"


def write_new_keyring(path: Path) -> None:
    """A keyring of one new key, mode 0600 (``keys init``); an existing file is left alone."""
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(new_key_line() + "\n")


def read_keyring(path: Path) -> list[tuple[str, bytes]]:
    """The keys of the file, the sealing one first; ``DataKeyError`` naming the file (never a key) if unusable."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataKeyError(f"data_key_file = {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if mode & 0o077:
        raise DataKeyError(f"data_key_file = {path} is readable by group or others; run `chmod 600 {path}`")
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = _LINE.match(line)
        if found is None:
            raise DataKeyError(f"data_key_file = {path}, line {number}: expected '<8 hex kid> <64 hex key>'")
        keys.append((found.group(1), bytes.fromhex(found.group(2))))
    if not keys:
        raise DataKeyError(f"data_key_file = {path} holds no key")
    return keys


@dataclass
class DataKeys:
    """The keyring of ``path``, re-read when the file changes (a rotation reaches every process by itself)."""

    path: Path
    _keys: list[tuple[str, bytes]] = field(default_factory=list, repr=False)
    _stamp: tuple[int, int] = (0, 0)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._reload()

    def _reload(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._keys, self._stamp = read_keyring(self.path), stamp

    def _current(self) -> list[tuple[str, bytes]]:
        with self._lock:
            try:
                self._reload()
            except OSError as exc:
                raise DataKeyError(f"data_key_file = {self.path}: {exc.strerror}") from None
            return self._keys

    @property
    def sealing_kid(self) -> str:
        return self._current()[0][0]

    def seal(self, plaintext: str, context: str) -> str:
        kid, key = self._current()[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}:{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, context: str) -> str:
        """The secret a sealed value holds; a value from before sealing (plain) is returned as it is."""
        if not is_sealed(value):
            return value
        try:
            _, kid, payload = value.split(":", 2)
            raw = base64.urlsafe_b64decode(payload)
        except ValueError:
            raise DataKeyError("a sealed secret is malformed") from None
        key = dict(self._current()).get(kid)
        if key is None:
            raise DataKeyError(f"data key {kid} is not in {self.path}: it was removed, or the file is another's")
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise DataKeyError("a sealed secret does not open: altered, or moved from another row") from None

    def needs_reseal(self, value: str) -> bool:
        """Plain, or sealed under a key that no longer seals."""
        return not value.startswith(f"{PREFIX}:{self.sealing_kid}:")


def rotate(path: Path) -> str:
    """Put a new key first in the keyring (the older ones stay, to open what they sealed); the new kid."""
    keys = read_keyring(path)
    line = new_key_line()
    lines = [line] + [f"{kid} {key.hex()}" for kid, key in keys]
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return line.split(" ", 1)[0]
