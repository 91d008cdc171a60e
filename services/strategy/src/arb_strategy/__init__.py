"""arb_strategy."""
