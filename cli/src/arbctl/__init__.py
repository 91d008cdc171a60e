"""arbctl."""
