"""arb_venue_sim."""
