"""A loopback stand-in of the E2B service at the HTTP level, for the real ``e2b`` SDK (the service is unreachable here).

The SDK is pointed at it with ``api_url`` (E2B's REST API) and ``sandbox_url`` (every sandbox's envd): one uvicorn
server on 127.0.0.1 answers both, told apart by path; envd requests name their sandbox with the ``E2b-Sandbox-Id``
header the SDK sends and carry the sandbox's ``X-Access-Token``. What it implements, as the SDK calls it:

* REST (``X-API-Key`` checked): ``POST /v2/sandboxes`` (201, a ``Sandbox``), ``GET /v2/sandboxes?metadata=…``,
  ``POST /v2/sandboxes/{id}/connect``, ``DELETE /sandboxes/{id}`` (204; the sandbox's processes are killed).
* envd HTTP: ``GET /health``, ``POST /files`` (multipart, one ``file`` part per file, named by its path),
  ``GET /files?path=…`` (the bytes; 404 when missing).
* envd Connect RPC (JSON codec, the SDK's generated protobuf messages and connectrpc's server):
  ``process.Process/Start`` (a server stream: start with the pid, stdout/stderr data as it is read, end with the
  exit code) and ``filesystem.Filesystem/MakeDir``.

Each sandbox's home is a real directory (sandbox path ``/home/user/x`` → ``<root>/<id>/home/user/x``; a path that
leaves it is refused) and a command really runs there, as the SDK asks (``/bin/bash -l -c <cmd>``), under bubblewrap
so that sandbox paths are real paths: the host's ``/`` read-only, the sandbox's home bound at ``/home/user``, a
private ``/tmp``, and ``<root>/shared`` at ``/mnt/standin`` (shared by every sandbox: a test's command can leave a
trace there across sandboxes). It is a test double of the service, not an isolation boundary (the network is the
host's). ``calls`` records what E2B was asked to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import Headers, RequestContext
from e2b.envd.filesystem import filesystem_pb
from e2b.envd.filesystem.filesystem_connect import Filesystem, FilesystemASGIApplication
from e2b.envd.process import process_pb
from e2b.envd.process.process_connect import Process, ProcessASGIApplication
from protobuf import Oneof
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from helpers import make_settings
from kodo.settings import Settings

API_KEY = "e2b_standin_key"
BWRAP = shutil.which("bwrap")
ENVD_VERSION = "0.5.4"  # multipart uploads, the default user: what the adapter's calls need
HOME = "/home/user"
SHARED = "/mnt/standin"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a base image's, not the tests' venv


@dataclass
class Calls:
    """What the service was asked to do, in order."""

    commands: list[tuple[str, str | None]] = field(default_factory=list)  # (the user's command, cwd)
    writes: list[str] = field(default_factory=list)  # sandbox paths written by POST /files
    batches: list[int] = field(default_factory=list)  # files per POST /files request
    templates: list[str] = field(default_factory=list)  # templateID of every POST /v2/sandboxes
    killed: list[str] = field(default_factory=list)
    created: int = 0


@dataclass
class StandInSandbox:
    sandbox_id: str
    template_id: str
    metadata: dict[str, str]
    directory: Path
    access_token: str
    started_at: str
    processes: set[asyncio.subprocess.Process] = field(default_factory=set)

    def host_path(self, path: str) -> Path:
        """The host path of sandbox ``path`` (relative paths are the user's home's); ``..`` out of it is refused."""
        absolute = path if path.startswith("/") else f"{HOME}/{path}"
        target = (self.directory / absolute.lstrip("/")).resolve()
        if not target.is_relative_to(self.directory.resolve()):
            raise PermissionError(f"{path} leaves the sandbox")
        return target

    def as_json(self) -> dict[str, Any]:
        return {
            "templateID": self.template_id,
            "sandboxID": self.sandbox_id,
            "clientID": "standin",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": self.access_token,
            "domain": None,
        }


class E2BService:
    """The stand-in, served on 127.0.0.1 by a uvicorn thread; ``with E2BService(root) as service: …``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sandboxes: dict[str, StandInSandbox] = {}
        self.shared = root / "shared"
        self.calls = Calls()
        self.refuse_uploads = False  # POST /files answers 502 (envd unreachable) while set
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- life -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self) -> dict[str, str]:
        """The E2BSandbox keyword arguments that point the real SDK at this service."""
        return {"api_key": API_KEY, "api_url": self.url, "sandbox_url": self.url}

    def __enter__(self) -> E2BService:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        if BWRAP is None:
            raise RuntimeError("the E2B stand-in runs commands under bubblewrap: install bwrap")
        self.shared.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(self._application(), log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, name="e2b-standin", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the E2B stand-in did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        for sandbox in list(self.sandboxes.values()):
            _kill_processes(sandbox)
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)

    # --- state ------------------------------------------------------------------------------------

    def create(self, template_id: str, metadata: dict[str, str]) -> StandInSandbox:
        with self._lock:
            number = next(self._ids)
            self.calls.created += 1
            self.calls.templates.append(template_id)
        sandbox_id = f"sbx{number:04d}"
        directory = self.root / sandbox_id
        (directory / HOME.lstrip("/")).mkdir(parents=True)
        sandbox = StandInSandbox(
            sandbox_id=sandbox_id,
            template_id=template_id,
            metadata=metadata,
            directory=directory,
            access_token=f"token-{sandbox_id}",
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.sandboxes[sandbox_id] = sandbox
        return sandbox

    def sandbox_for(self, headers: Any) -> StandInSandbox:
        """The live sandbox an envd request names (``E2b-Sandbox-Id``), its access token checked."""
        sandbox = self.sandboxes.get(str(headers.get("e2b-sandbox-id", "")))
        if sandbox is None:
            raise LookupError("no such sandbox")
        if headers.get("x-access-token") != sandbox.access_token:
            raise PermissionError("wrong envd access token")
        return sandbox

    # --- the application --------------------------------------------------------------------------

    def _application(self) -> Any:
        rest = Starlette(
            routes=[
                Route("/v2/sandboxes", self._create, methods=["POST"]),
                Route("/v2/sandboxes", self._list, methods=["GET"]),
                Route("/v2/sandboxes/{sandbox_id}/connect", self._connect, methods=["POST"]),
                Route("/sandboxes/{sandbox_id}", self._kill, methods=["DELETE"]),
                Route("/health", lambda _: Response(status_code=204), methods=["GET"]),
                Route("/files", self._upload, methods=["POST"]),
                Route("/files", self._download, methods=["GET"]),
            ]
        )
        process = ProcessASGIApplication(_Process(self))
        filesystem = FilesystemASGIApplication(_Filesystem(self))

        async def application(scope: Any, receive: Any, send: Any) -> None:
            path = str(scope.get("path", ""))
            if path.startswith("/process.Process/"):
                await process(scope, receive, send)
            elif path.startswith("/filesystem.Filesystem/"):
                await filesystem(scope, receive, send)
            else:
                await rest(scope, receive, send)

        return application

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("x-api-key") == API_KEY

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        body = await request.json()
        sandbox = self.create(str(body.get("templateID") or "base"), dict(body.get("metadata") or {}))
        return JSONResponse(sandbox.as_json(), status_code=201)

    async def _list(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        wanted = dict(urllib.parse.parse_qsl(request.query_params.get("metadata", "")))
        listed = [
            sandbox.as_json()
            | {
                "startedAt": sandbox.started_at,
                "endAt": sandbox.started_at,
                "cpuCount": 2,
                "memoryMB": 512,
                "diskSizeMB": 1024,
                "state": "running",
                "metadata": sandbox.metadata,
            }
            for sandbox in list(self.sandboxes.values())
            if all(sandbox.metadata.get(key) == value for key, value in wanted.items())
        ]
        return JSONResponse(listed)

    async def _connect(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        sandbox = self.sandboxes.get(request.path_params["sandbox_id"])
        if sandbox is None:
            return _error(404, "sandbox not found")
        return JSONResponse(sandbox.as_json(), status_code=200)

    async def _kill(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        sandbox = self.sandboxes.pop(request.path_params["sandbox_id"], None)
        if sandbox is None:
            return _error(404, "sandbox not found")
        _kill_processes(sandbox)
        self.calls.killed.append(sandbox.sandbox_id)
        return Response(status_code=204)

    async def _upload(self, request: Request) -> Response:
        try:
            sandbox = self.sandbox_for(request.headers)
        except LookupError as error:
            return _error(502, str(error))
        except PermissionError as error:
            return _error(401, str(error))
        if self.refuse_uploads:
            return _error(502, "envd is not reachable")
        form = await request.form(max_files=100_000)
        written: list[dict[str, str]] = []
        parts = form.getlist("file")
        for part in parts:
            name = str(getattr(part, "filename", "") or request.query_params.get("path", ""))
            data = await part.read() if hasattr(part, "read") else str(part).encode("utf-8")
            target = sandbox.host_path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self.calls.writes.append(name)
            written.append({"name": target.name, "type": "file", "path": name})
        self.calls.batches.append(len(parts))
        return JSONResponse(written)

    async def _download(self, request: Request) -> Response:
        try:
            sandbox = self.sandbox_for(request.headers)
        except LookupError as error:
            return _error(502, str(error))
        except PermissionError as error:
            return _error(401, str(error))
        path = request.query_params.get("path", "")
        target = sandbox.host_path(path)
        if not target.is_file():
            return _error(404, f"path '{path}' does not exist")
        return Response(target.read_bytes(), media_type="application/octet-stream")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _kill_processes(sandbox: StandInSandbox) -> None:
    for process in list(sandbox.processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _sandbox_of(service: E2BService, headers: Headers) -> StandInSandbox:
    try:
        return service.sandbox_for(headers)
    except LookupError as error:
        raise ConnectError(Code.UNAVAILABLE, str(error)) from error
    except PermissionError as error:
        raise ConnectError(Code.UNAUTHENTICATED, str(error)) from error


def _event(**one: Any) -> process_pb.StartResponse:
    ((name, value),) = one.items()
    return process_pb.StartResponse(event=process_pb.ProcessEvent(event=Oneof(name, value)))


class _Process(Process):
    """envd's process service: ``Start`` runs the command in the sandbox's directory and streams it."""

    def __init__(self, service: E2BService) -> None:
        self.service = service

    async def start(
        self, request: process_pb.StartRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[process_pb.StartResponse]:
        sandbox = _sandbox_of(self.service, ctx.request_headers)
        config = request.process
        cwd = sandbox.host_path(config.cwd or HOME)
        if not cwd.is_dir():
            raise ConnectError(Code.INVALID_ARGUMENT, f"cwd '{config.cwd}' does not exist")
        self.service.calls.commands.append((config.args[-1] if config.args else config.cmd, config.cwd or None))
        environment = {"PATH": SANDBOX_PATH, "HOME": HOME} | dict(config.envs)
        home_directory = sandbox.host_path(HOME)
        isolation = [BWRAP, "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
        isolation += ["--tmpfs", "/tmp", "--tmpfs", "/home", "--bind", str(home_directory), HOME]
        isolation += ["--tmpfs", "/mnt", "--bind", str(self.service.shared), SHARED]
        isolation += ["--chdir", "/" + cwd.relative_to(sandbox.directory.resolve()).as_posix(), "--"]
        process = await asyncio.create_subprocess_exec(
            *isolation,
            config.cmd,
            *config.args,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        sandbox.processes.add(process)
        if self.service.sandboxes.get(sandbox.sandbox_id) is not sandbox:  # killed while the process was starting
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        try:
            yield _event(start=process_pb.ProcessEvent.StartEvent(pid=process.pid))
            async for stream, chunk in _output(process):
                data = process_pb.ProcessEvent.DataEvent(output=Oneof(stream, chunk))
                yield _event(data=data)
            code = await process.wait()
            end = process_pb.ProcessEvent.EndEvent(
                exit_code=code if code >= 0 else -1,
                exited=code >= 0,
                status=f"exit status {code}" if code >= 0 else f"signal: {signal.Signals(-code).name}",
            )
            yield _event(end=end)
        finally:
            sandbox.processes.discard(process)
            if process.returncode is None:  # the client went away (or the deadline passed): the command dies
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)


async def _output(process: asyncio.subprocess.Process) -> AsyncIterator[tuple[str, bytes]]:
    """(stream, chunk) as the process writes them, until both of its pipes close."""
    queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue()

    async def pump(name: str, reader: asyncio.StreamReader | None) -> None:
        while reader is not None and (chunk := await reader.read(1 << 16)):
            await queue.put((name, chunk))
        await queue.put((name, None))

    pumps = [asyncio.create_task(pump("stdout", process.stdout)), asyncio.create_task(pump("stderr", process.stderr))]
    try:
        open_streams = 2
        while open_streams:
            name, chunk = await queue.get()
            if chunk is None:
                open_streams -= 1
            else:
                yield name, chunk
    finally:
        for task in pumps:
            task.cancel()


class _Filesystem(Filesystem):
    """envd's filesystem service: ``MakeDir`` (ALREADY_EXISTS when it exists, as envd answers)."""

    def __init__(self, service: E2BService) -> None:
        self.service = service

    async def make_dir(
        self, request: filesystem_pb.MakeDirRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.MakeDirResponse:
        sandbox = _sandbox_of(self.service, ctx.request_headers)
        target = sandbox.host_path(request.path)
        if target.exists():
            raise ConnectError(Code.ALREADY_EXISTS, f"directory '{request.path}' already exists")
        target.mkdir(parents=True)
        return filesystem_pb.MakeDirResponse()


@contextlib.contextmanager
def running(root: Path) -> Iterator[E2BService]:
    """The stand-in for the duration of a ``with`` block (the test is skipped, saying why, without bubblewrap)."""
    if BWRAP is None:
        pytest.skip("the E2B stand-in runs commands under bubblewrap: bwrap is not installed")
    service = E2BService(root)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def live_settings(database_url: str, tmp_path: Path, service: E2BService, **overrides: str) -> Settings:
    """kodo on live E2B sandboxes served by ``service``; runs may clone repositories under ``tmp_path``."""
    return make_settings(
        database_url,
        tmp_path / "home",
        KODO_REPO_ROOTS=str(tmp_path),
        SBX_MODE="live",
        SBX_PROVIDER="e2b",
        E2B_API_KEY=API_KEY,
        E2B_API_URL=service.url,
        E2B_SANDBOX_URL=service.url,
        **overrides,
    )
