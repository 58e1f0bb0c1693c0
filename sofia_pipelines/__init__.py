"""Sofia's Dagster code location."""
