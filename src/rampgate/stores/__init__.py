"""Counter stores: where the algorithms keep their state."""
