{#- Whether a text value holds a control character (NUL, tab, newline, ... DEL): POSIX [:cntrl:],
    the class schema.CONTROL_CHARACTER spells out for the loader's row rules. -#}
{% macro has_control_character(column) -%}
    {{ return(adapter.dispatch('has_control_character', 'clickstream')(column)) }}
{%- endmacro %}

{% macro default__has_control_character(column) -%}
    regexp_matches({{ column }}, '[[:cntrl:]]')
{%- endmacro %}

{#- regexp_like would have to match the whole value, and its "." stops at a newline. -#}
{% macro snowflake__has_control_character(column) -%}
    regexp_instr({{ column }}, '[[:cntrl:]]') > 0
{%- endmacro %}
