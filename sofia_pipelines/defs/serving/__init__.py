"""Serving: the snapshot of runtime-facing tables the trading runtime reads."""
