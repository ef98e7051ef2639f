"""Start and stop a local ``opencode serve`` (pinned 1.18.x) wired to an OpenAI-compatible model.

Used by the test suite (against kodo's fake model server) and for demos. The server gets its own
``HOME``/``XDG_*`` directories, its config inline (``OPENCODE_CONFIG_CONTENT``: the provider, the
model as default and small model, no sharing, no autoupdate), the quiet switches that keep it
offline, Basic auth when a password is given, and binds to loopback. It is stopped by PID (its whole
process group), and dies with the process that started it (``setpriv --pdeathsig``) if that one is
killed first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

PINNED_VERSION = "1.18.33"
PROVIDER_ID = "kodo"
_LISTENING = re.compile(r"listening on (http://[0-9.]+:\d+)")
_QUIET = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
}


def find_binary() -> str | None:
    """The ``opencode`` executable on PATH (``npm install -g opencode-ai@<PINNED_VERSION>`` puts it there)."""
    return shutil.which("opencode")


def binary_version(binary: str) -> str | None:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def server_config(model_base_url: str, model: str, api_key: str = "kodo") -> dict[str, Any]:
    """OpenCode config: one OpenAI-compatible provider whose model is the default and the small model."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "kodo model",
                "options": {"baseURL": model_base_url, "apiKey": api_key},
                "models": {model: {"name": model, "tool_call": True, "limit": {"context": 128000, "output": 8192}}},
            }
        },
        "model": f"{PROVIDER_ID}/{model}",
        "small_model": f"{PROVIDER_ID}/{model}",
        "autoupdate": False,
        "share": "disabled",
    }


class OpenCodeServer:
    """One ``opencode serve`` child process: ``with OpenCodeServer(...) as server: server.base_url``."""

    def __init__(
        self,
        *,
        home: Path,
        cwd: Path,
        model_base_url: str,
        model: str,
        api_key: str = "kodo",
        password: str | None = None,
        binary: str | None = None,
        port: int = 0,
    ) -> None:
        found = binary or find_binary()
        if found is None:
            raise FileNotFoundError("opencode is not installed (npm install -g opencode-ai@" + PINNED_VERSION + ")")
        self.binary = found
        self.home = home
        self.cwd = cwd
        self.password = password
        self.port = port
        self.config = server_config(model_base_url, model, api_key)
        self.log = home / "opencode.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE_", "XDG_"))}
        dirs = {name: str(self.home / name.lower()) for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")}
        dirs["XDG_CACHE_HOME"] = str(self.home / "xdg_cache_home")
        env = {**base, **_QUIET, **dirs, "HOME": str(self.home), "OPENCODE_CONFIG_CONTENT": json.dumps(self.config)}
        if self.password:
            env["OPENCODE_SERVER_PASSWORD"] = self.password
        return env

    def start(self, timeout: float = 90.0) -> OpenCodeServer:
        self.home.mkdir(parents=True, exist_ok=True)
        self.cwd.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as handle:
            # setpriv --pdeathsig: the server dies with the process that started it, even on kill -9.
            guard = [setpriv, "--pdeathsig", "KILL", "--"] if (setpriv := shutil.which("setpriv")) else []
            self.proc = subprocess.Popen(
                [*guard, self.binary, "serve", "--hostname", "127.0.0.1", "--port", str(self.port), "--pure"],
                cwd=self.cwd,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"opencode serve exited {self.proc.returncode}: {self.tail()}")
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            if found and self._healthy(found.group(1)):
                self.base_url = found.group(1)
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"opencode serve not ready in {timeout}s: {self.tail()}")

    def _healthy(self, url: str) -> bool:
        auth = httpx.BasicAuth("opencode", self.password) if self.password else None
        try:
            return httpx.get(f"{url}/global/health", auth=auth, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> OpenCodeServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
