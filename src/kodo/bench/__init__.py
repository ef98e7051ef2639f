"""Load tools: ``kodo bench`` and ``kodo soak`` against a running server on loopback, and what they measure."""
