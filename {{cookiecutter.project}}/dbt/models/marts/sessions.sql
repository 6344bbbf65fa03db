with

product_steps as (

    select * from {{ ref('stg_product_events') }}

),

sessions as (

    select
        tenant,
        session_id,
        {{ ordered_list('sku', 'step') }} as skus,
        {{ ordered_list('action', 'step') }} as actions,
        count(*) as session_length,
        min(first_event_at) as first_event_at,
        max(last_event_at) as last_event_at

    from product_steps

    group by tenant, session_id

),

final as (

    select
        ---------- ids
        session_id,
        tenant,

        ---------- lists
        skus,
        actions,

        ---------- numerics
        session_length,

        ---------- timestamps
        first_event_at,
        last_event_at,

        ---------- dates
        cast(first_event_at as date) as session_date

    from sessions

)

select * from final
