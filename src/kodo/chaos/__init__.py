"""The chaos harness: fault injection against a kodo of its own, and the proof that nothing was lost or done
twice (``kodo chaos``, and the outage and crash tests).

Not the ops plane: nothing here operates a running kodo. ``driver`` runs the iterations, ``cluster`` starts,
kills and restarts the kodo it breaks, ``load`` submits the mixed load and checks the ledger and the oracles
afterwards, ``outage`` stops and starts the embedded Postgres on purpose. This module stays light: the CLI
reads the kinds of crash from it when it builds its options.
"""

from __future__ import annotations

KINDS = ("worker", "api", "monolith", "postgres")  # the kinds of crash, in the order an iteration takes them
