"""Secrets at rest (kodo.sealing): sealed with kodo's key, unsealed only with that key, fail closed otherwise."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from helpers import make_settings
from kodo import sealing
from kodo.errors import ConfigurationError
from kodo.settings import Settings
from kodo.workflows.webhooks import new_secret


def _settings(home: Path, **env: str) -> Settings:
    return make_settings("postgresql://u@127.0.0.1/x", home, **env)


def test_a_sealed_secret_hides_the_secret_and_unseals_with_the_same_key(tmp_path: Path) -> None:
    """The sealed text carries neither the secret nor its key material; the key file is made once, mode 0600."""
    settings = _settings(tmp_path / "home")
    secret = new_secret()
    sealed = sealing.seal(settings, secret)
    assert sealed.startswith("fernet:") and secret not in sealed and secret.removeprefix("whsec_") not in sealed
    key_file = tmp_path / "home" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    assert sealing.unseal(settings, sealing.seal(settings, secret)) == secret
    assert sealing.unseal(settings, sealed) == secret and key_file.read_bytes() == key  # the same key reused
    assert sealing.seal(settings, secret) != sealed  # a fresh nonce every time


def test_another_key_fails_closed_with_a_clear_error(tmp_path: Path) -> None:
    """A secret sealed with one key does not unseal with another (env or file): ConfigurationError naming the key."""
    first = _settings(tmp_path / "a", KODO_SECRET_KEY=Fernet.generate_key().decode())
    sealed = sealing.seal(first, "whsec_abc")
    assert sealing.unseal(first, sealed) == "whsec_abc"
    with pytest.raises(ConfigurationError, match="cannot be decrypted with this kodo's key \\(KODO_SECRET_KEY\\)"):
        sealing.unseal(_settings(tmp_path / "b", KODO_SECRET_KEY=Fernet.generate_key().decode()), sealed)
    with pytest.raises(ConfigurationError, match=r"secret\.key"):
        sealing.unseal(_settings(tmp_path / "c"), sealed)
    with pytest.raises(ConfigurationError, match="not sealed"):
        sealing.unseal(first, "whsec_abc")


def test_a_bad_key_is_refused(tmp_path: Path) -> None:
    """A KODO_SECRET_KEY that is not a Fernet key, or a key file others can read, is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="KODO_SECRET_KEY is not a Fernet key"):
        sealing.seal(_settings(tmp_path / "a", KODO_SECRET_KEY="hunter2"), "whsec_abc")
    settings = _settings(tmp_path / "b")
    sealing.seal(settings, "whsec_abc")
    sealing.key_path(settings).chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        sealing.seal(settings, "whsec_abc")


def test_keys_rotate_the_first_seals_every_one_unseals(tmp_path: Path) -> None:
    """With KODO_SECRET_KEY=new,old an old value unseals, reseal moves it under the new key alone, and a value
    no key opens is left as it is by `current` (kept unusable, not fatal)."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_old = sealing.seal(_settings(tmp_path / "a", KODO_SECRET_KEY=old), "whsec_abc")
    both = _settings(tmp_path / "b", KODO_SECRET_KEY=f"{new},{old}")
    assert sealing.unseal(both, sealed_old) == "whsec_abc"
    moved = sealing.reseal(both, sealed_old)
    assert moved != sealed_old and sealing.reseal(both, moved) == moved
    assert sealing.unseal(_settings(tmp_path / "c", KODO_SECRET_KEY=new), moved) == "whsec_abc"
    assert sealing.unseal(both, sealing.current(both, "whsec_plain")) == "whsec_plain"
    stranger = sealing.seal(_settings(tmp_path / "d", KODO_SECRET_KEY=Fernet.generate_key().decode()), "whsec_x")
    assert sealing.current(both, stranger) == stranger
