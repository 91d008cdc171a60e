"""arb_common."""
