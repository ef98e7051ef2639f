"""Load tools: ``kodo bench`` and ``kodo soak`` against a running server on loopback (``kodo bench history``
seeds a long history and times the hot reads), and what they measure."""
