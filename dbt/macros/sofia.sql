{# Schemas are named exactly as configured (staging, marts), not prefixed with the target schema. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name if custom_schema_name else target.schema }}
{%- endmacro %}

{# A predicate keeping rows of the partition window passed in vars; true when no window is given. #}
{% macro in_window(column) -%}
    {% if var('min_date') %}{{ column }} >= TIMESTAMP '{{ var("min_date") }}' AND {{ column }} < TIMESTAMP '{{ var("max_date") }}'{% else %}TRUE{% endif %}
{%- endmacro %}

{# Incremental marts replace exactly the partition's window: delete it, then append the rebuilt rows. #}
{% macro delete_window(column) -%}
    {% if is_incremental() and var('min_date') %}
    DELETE FROM {{ this }} WHERE {{ in_window(column) }}
    {% endif %}
{%- endmacro %}

{# The quote currency of a ccxt symbol: BTC/USDT -> USDT, BTC/USDT:USDT -> USDT, BTC/TRY -> TRY. #}
{% macro quote_of(symbol) -%}
    split_part(split_part({{ symbol }}, ':', 1), '/', 2)
{%- endmacro %}
