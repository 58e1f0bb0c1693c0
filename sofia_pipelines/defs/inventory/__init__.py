"""Inventory (C): target balances per venue and asset, and the cheapest transfers to reach them."""
