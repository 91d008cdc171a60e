"""Venue dialects: one module per wire protocol (cryptofeed style)."""
