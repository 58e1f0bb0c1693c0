"""The audit journal back in Dagster: records, fills, reconciliation, net P&L (feature G)."""
