{#- Number of elements of an array column. -#}
{% macro list_length(column) -%}
    {{ return(adapter.dispatch('list_length', 'clickstream')(column)) }}
{%- endmacro %}

{% macro default__list_length(column) -%}
    cardinality({{ column }})
{%- endmacro %}

{% macro duckdb__list_length(column) -%}
    len({{ column }})
{%- endmacro %}

{% macro snowflake__list_length(column) -%}
    array_size({{ column }})
{%- endmacro %}
