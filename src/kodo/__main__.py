"""``python -m kodo``: the same as the ``kodo`` command."""

from kodo.cli import main

main()
