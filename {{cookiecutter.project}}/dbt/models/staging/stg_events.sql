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
        nullif(product_sku_hash, '') as sku,
        nullif(hashed_url, '') as url,

        ---------- text
        event_type,
        nullif(product_action, '') as product_action,

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
    -- A hash aggregate is 2-3x cheaper than a row_number() window here, and filters on its keys
    -- (event_type, sku...) reach the scan of the raw log, so readers de-duplicate only their rows.
    select
        ---------- ids
        tenant,
        session_id,
        sku,
        url,
        min_by(load_id, loaded_at) as load_id,

        ---------- text
        event_type,
        product_action,

        ---------- numerics
        event_epoch_ms,

        ---------- timestamps
        event_at,
        min(loaded_at) as loaded_at,
        min(event_date) as event_date

    from renamed

    group by tenant, session_id, sku, url, event_type, product_action, event_epoch_ms, event_at

)

select * from final
