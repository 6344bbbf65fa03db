{#- Fails on rows whose value lies outside [min_value, max_value]; either bound may be omitted.
    Nulls pass: pair it with not_null where they are not allowed. -#}
{% test value_between(model, column_name, min_value=none, max_value=none) %}

select *
from {{ model }}
where false
    {%- if min_value is not none %}
    or {{ column_name }} < {{ min_value }}
    {%- endif %}
    {%- if max_value is not none %}
    or {{ column_name }} > {{ max_value }}
    {%- endif %}

{% endtest %}
