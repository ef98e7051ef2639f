"""Load tools that measure a running kodo: ``kodo bench history`` (seed a long history, time the hot reads)."""
