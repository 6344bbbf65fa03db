-- Collapsing must leave no step whose SKU repeats the previous step's SKU in the same session:
-- such repeats would let "recommend the last item" inflate every metric.
with

product_steps as (

    select * from {{ ref('stg_product_events') }}

),

final as (

    select
        current_step.tenant,
        current_step.session_id,
        current_step.step,
        current_step.sku

    from product_steps as current_step

    inner join product_steps as previous_step
        on current_step.tenant = previous_step.tenant
        and current_step.session_id = previous_step.session_id
        and current_step.step = previous_step.step + 1

    where current_step.sku = previous_step.sku

)

select * from final
