"""Fees (B): trading fees by venue, symbol and tier, withdrawal fees, markets, and the Turkish tax rules."""
