{#- Fails on rows whose id is longer than `max_length` characters or holds a control character:
    garbage, not an id. The loader's row rules quarantine such rows, so this catches rows that
    came another way. Nulls pass. -#}
{% test valid_identifier(model, column_name, max_length) %}

select {{ column_name }}
from {{ model }}
where length({{ column_name }}) > {{ max_length }}
    or {{ has_control_character(column_name) }}

{% endtest %}
