"""The outside world, behind Protocols: the coding agent and the sandbox."""
