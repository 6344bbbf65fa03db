{#- Aggregate `column` into an array ordered by `order_by` (one list per group). -#}
{% macro ordered_list(column, order_by) -%}
    {{ return(adapter.dispatch('ordered_list', 'clickstream')(column, order_by)) }}
{%- endmacro %}

{% macro default__ordered_list(column, order_by) -%}
    array_agg({{ column }} order by {{ order_by }})
{%- endmacro %}

{% macro duckdb__ordered_list(column, order_by) -%}
    list({{ column }} order by {{ order_by }})
{%- endmacro %}

{% macro snowflake__ordered_list(column, order_by) -%}
    array_agg({{ column }}) within group (order by {{ order_by }})
{%- endmacro %}
