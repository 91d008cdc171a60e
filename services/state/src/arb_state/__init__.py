"""arb_state."""
