-- Deliveries from the raw partitions the quality gate let through, renamed for the marts.
-- grain: one row per delivery_id

with source as (
    select * from {{ source('raw', 'deliveries') }}
),

renamed as (
    select
        -- [ids]
        delivery_id,
        order_id,
        client_id,
        driver_id,
        vehicle_id,
        -- [timestamps]
        dispatched_at,
        delivered_at,
        date as dispatch_date,  -- UTC date of dispatched_at (the raw partition).
        -- [outcome]
        status,
        failure_reason,
        proof_of_delivery,
        -- [numbers]
        attempts,
        distance_km,
        -- [provenance]
        placeholder_columns  -- Columns holding a source mapping's stand-in, not a measured value (';'-separated).
    from source
)

select * from renamed
