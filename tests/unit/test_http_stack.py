"""The API's HTTP stack as ``kodo.main.serve`` configures uvicorn: httptools parses requests and uvloop runs the
event loop (docs/performance.md: a header GET costs ~10 % less API CPU than on h11 and asyncio's loop)."""

from __future__ import annotations

import uvicorn


def test_uvicorn_serves_on_httptools_and_uvloop() -> None:
    """uvicorn's automatic choice, with kodo's options, is httptools' protocol and uvloop's loop factory."""
    config = uvicorn.Config(app=lambda scope, receive, send: None, log_level="warning", access_log=False)
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    factory = config.get_loop_factory()
    assert factory is not None and factory.__module__.startswith("uvloop")
