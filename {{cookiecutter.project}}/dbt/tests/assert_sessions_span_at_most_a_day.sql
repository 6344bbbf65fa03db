-- Coveo cuts a session after 30 idle minutes, so one session whose product events lie more than
-- `max_session_span_hours` (default 24) apart is a reused or colliding session id. Each of its
-- rows is valid, so the loader lets them through: this test stops the build instead of training
-- on a "session" that mixes several visits. Raise the variable if your sessions are that long.
with

sessions as (

    select * from {{ ref('sessions') }}

),

final as (

    select
        tenant,
        session_id,
        session_length,
        first_event_at,
        last_event_at

    from sessions

    where last_event_at > {{ dbt.dateadd('hour', var('max_session_span_hours', 24), 'first_event_at') }}

)

select * from final
