"""arb_reconciler."""
