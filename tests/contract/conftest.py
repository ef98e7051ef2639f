"""Contract-tier fixtures: the local model and OpenCode servers the live agents talk to."""

from live_servers import fake_model, opencode_server

__all__ = ["fake_model", "opencode_server"]
