"""Funding (F): delta-neutral spot/perp carry opportunities."""
