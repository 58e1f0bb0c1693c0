"""Profit attribution: P&L by strategy, venue, symbol and day, split into components that sum to net (feature J)."""
