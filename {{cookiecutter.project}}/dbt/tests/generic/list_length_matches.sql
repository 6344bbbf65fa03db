{#- Fails on rows whose array column does not hold exactly `length_column` elements. -#}
{% test list_length_matches(model, column_name, length_column) %}

select *
from {{ model }}
where {{ list_length(column_name) }} != {{ length_column }}

{% endtest %}
