"""``python -m arb_reconciler``."""

from .app import main

main()
