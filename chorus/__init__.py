"""chorus."""
