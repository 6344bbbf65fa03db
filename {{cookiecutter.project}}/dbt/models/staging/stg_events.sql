with

source as (

    select * from {{ source('raw', 'events') }}

),

renamed as (

    select
        ---------- ids
        load_id,
        tenant,
        session_id_hash as session_id,
        nullif(trim(product_sku_hash), '') as sku,
        nullif(trim(hashed_url), '') as url,

        ---------- text
        lower(trim(event_type)) as event_type,
        nullif(lower(trim(product_action)), '') as product_action,

        ---------- numerics
        server_timestamp_epoch_ms as event_epoch_ms,

        ---------- timestamps
        {{ epoch_ms_to_timestamp('server_timestamp_epoch_ms') }} as event_at,
        loaded_at,
        event_date

    from source

),

final as (

    -- A batch sent twice loads its events twice: keep each event once, with its earliest load.
    -- (A hash aggregate: several times faster than a row_number() window on DuckDB.)
    select
        tenant,
        session_id,
        sku,
        url,
        event_type,
        product_action,
        event_epoch_ms,
        event_at,
        min(event_date) as event_date,
        min_by(load_id, loaded_at) as load_id,
        min(loaded_at) as loaded_at

    from renamed

    group by tenant, session_id, sku, url, event_type, product_action, event_epoch_ms, event_at

)

select * from final
