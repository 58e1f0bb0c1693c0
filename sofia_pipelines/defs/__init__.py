"""One folder per feature; every Dagster object at module level in here is loaded by `load_defs`."""
