"""Risk (H): the limits the runtime trades within."""
