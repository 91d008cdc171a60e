"""arb_executor."""
