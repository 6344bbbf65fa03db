{#- Milliseconds since 1970-01-01 UTC as a timestamp without time zone (in UTC). -#}
{% macro epoch_ms_to_timestamp(column) -%}
    {{ return(adapter.dispatch('epoch_ms_to_timestamp', 'clickstream')(column)) }}
{%- endmacro %}

{% macro default__epoch_ms_to_timestamp(column) -%}
    {{ dbt.dateadd('millisecond', column, "cast('1970-01-01' as timestamp)") }}
{%- endmacro %}

{% macro duckdb__epoch_ms_to_timestamp(column) -%}
    epoch_ms(cast({{ column }} as bigint))
{%- endmacro %}

{% macro snowflake__epoch_ms_to_timestamp(column) -%}
    to_timestamp_ntz({{ column }}, 3)
{%- endmacro %}
