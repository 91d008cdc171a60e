"""``python -m arb_executor``."""

from .app import main

main()
