{#- Fails on each combination of `columns` that occurs on more than one row (a compound key). -#}
{% test unique_together(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
