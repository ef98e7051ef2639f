"""Secrets at rest: kodo seals what it must keep but never show again (webhook signing secrets) with a key it
manages, and unseals them only to use them.

The key is ``KODO_SECRET_KEY`` when set (a Fernet key: url-safe base64 of 32 bytes, e.g. from
``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``), else the file
``$KODO_HOME/secret.key``, created with mode 0600 on first use. Either may hold several keys (comma- or
line-separated): the first seals, every one unseals, and :func:`reseal` moves a value to the first (key
rotation: put the new key first, restart, then drop the old one). Every process that signs or creates
webhooks must see the same key: set ``KODO_SECRET_KEY`` on all of them when they do not share ``KODO_HOME``.

A sealed value is ``fernet:<token>`` (AES-128-CBC + HMAC-SHA256, from ``cryptography``). Unsealing with
another key fails closed: :class:`ConfigurationError`, never a guess.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from kodo.errors import ConfigurationError
from kodo.settings import Settings

PREFIX = "fernet:"
KEY_FILE = "secret.key"


def key_path(settings: Settings) -> Path:
    return settings.home / KEY_FILE


def _fernet(keys: bytes, source: str) -> list[Fernet]:
    parts = [part.strip() for part in keys.replace(b"\n", b",").split(b",") if part.strip()]
    if not parts:
        raise ConfigurationError(f"{source} holds no key")
    try:
        return [Fernet(part) for part in parts]
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"{source} is not a Fernet key (url-safe base64 of 32 bytes)") from error


def _create_key_file(path: Path) -> None:
    """Write a new key to ``path`` atomically with mode 0600; a key another process wrote first wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{KEY_FILE}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(Fernet.generate_key() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def _keys(settings: Settings) -> list[Fernet]:
    if settings.secret_key is not None:
        return _fernet(settings.secret_key.get_secret_value().encode("ascii", "replace"), "KODO_SECRET_KEY")
    path = key_path(settings)
    if not path.exists():
        _create_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(f"{path} is readable by others (mode {mode:o}): chmod 600 it")
    return _fernet(path.read_bytes(), str(path))


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def seal(settings: Settings, secret: str) -> str:
    """``secret`` encrypted with kodo's key, as ``fernet:<token>``."""
    return PREFIX + _keys(settings)[0].encrypt(secret.encode("utf-8")).decode("ascii")


def unseal(settings: Settings, sealed: str) -> str:
    """The secret inside ``sealed``; :class:`ConfigurationError` when it is not sealed or not with this key."""
    if not is_sealed(sealed):
        raise ConfigurationError("a stored secret is not sealed (expected fernet:…)")
    try:
        return MultiFernet(_keys(settings)).decrypt(sealed.removeprefix(PREFIX).encode("ascii")).decode("utf-8")
    except InvalidToken as error:
        source = "KODO_SECRET_KEY" if settings.secret_key is not None else str(key_path(settings))
        raise ConfigurationError(
            f"a stored secret cannot be decrypted with this kodo's key ({source}): it was sealed with another "
            "key; set KODO_SECRET_KEY (or $KODO_HOME/secret.key) to the key in use when it was created"
        ) from error


def reseal(settings: Settings, sealed: str) -> str:
    """``sealed`` under the first key (the same text when it already is); fails like :func:`unseal`."""
    unseal(settings, sealed)  # the clear error when no key opens it
    keys = _keys(settings)
    token = sealed.removeprefix(PREFIX).encode("ascii")
    try:
        keys[0].decrypt(token)
    except InvalidToken:
        return PREFIX + MultiFernet(keys).rotate(token).decode("ascii")
    return sealed


def current(settings: Settings, stored: str) -> str:
    """What a stored secret should read now: a plaintext one (written before sealing existed) sealed, one under
    an older key resealed under the first. One that no key opens is returned as it is: it stays unusable (its
    deliveries fail closed) rather than stopping kodo from starting."""
    if not is_sealed(stored):
        return seal(settings, stored)
    try:
        return reseal(settings, stored)
    except ConfigurationError:
        return stored
