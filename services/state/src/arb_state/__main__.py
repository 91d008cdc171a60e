"""``python -m arb_state``: the ledger writer and query API."""

from .app import main

main()
