with

sessions as (

    select * from {{ ref('sessions') }}

),

final as (

    -- One step gives no (prefix, next item) pair; very long sessions are mostly bots.
    select *
    from sessions
    where session_length between {{ var('min_session_length') }} and {{ var('max_session_length') }}

)

select * from final
