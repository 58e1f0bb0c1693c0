"""The dbt project (dbt/) as Dagster assets: raw -> staging -> marts."""
