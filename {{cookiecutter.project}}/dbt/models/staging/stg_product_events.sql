with

events as (

    select * from {{ ref('stg_events') }}

),

product_events as (

    -- Views, cart adds and purchases show intent; removes and pageviews are left out. A pageview
    -- twin of a detail event is therefore never counted twice.
    select
        tenant,
        session_id,
        sku,
        url,
        event_at,
        case product_action
            when 'detail' then 1
            when 'add' then 2
            when 'purchase' then 3
        end as action_strength

    from events

    where event_type = 'event_product'
        and product_action in ('detail', 'add', 'purchase')
        and sku is not null

),

flagged as (

    -- Events of one millisecond follow the funnel (detail, add, purchase), then the SKU. The URL
    -- makes the order total (stg_events holds each event once), so both windows see the same
    -- order on every warehouse and every run.
    select
        *,
        case
            when sku = lag(sku) over (
                partition by tenant, session_id
                order by event_at, action_strength, sku, url
            ) then 0
            else 1
        end as starts_step

    from product_events

),

numbered as (

    select
        *,
        cast(sum(starts_step) over (
            partition by tenant, session_id
            order by event_at, action_strength, sku, url
            rows between unbounded preceding and current row
        ) as integer) as step

    from flagged

),

steps as (

    select
        tenant,
        session_id,
        step,
        sku,
        max(action_strength) as action_strength,
        count(*) as n_events,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at

    from numbered

    group by tenant, session_id, step, sku

),

final as (

    select
        ---------- ids
        tenant,
        session_id,
        step,
        sku,

        ---------- text
        case action_strength
            when 1 then 'detail'
            when 2 then 'add'
            else 'purchase'
        end as action,

        ---------- numerics
        n_events,

        ---------- timestamps
        first_event_at,
        last_event_at

    from steps

)

select * from final
