"""arb_market_data."""
