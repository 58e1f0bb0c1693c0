"""SLOs and error budgets of the trading runtime from its audit journal (feature N)."""
