"""Sofia's trading runtime. It never imports dagster, dbt or great_expectations."""
