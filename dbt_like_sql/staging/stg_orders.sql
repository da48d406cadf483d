-- Orders from the raw partitions the quality gate let through, renamed for the marts.
-- grain: one row per order_id

with source as (
    select * from {{ source('raw', 'orders') }}
),

renamed as (
    select
        -- [ids]
        order_id,
        client_id,
        pickup_depot_id as depot_id,  -- Depot the parcels leave from.
        -- [timestamps]
        created_at,
        promised_by,
        date as created_date,  -- UTC date of created_at (the raw partition).
        -- [destination]
        dropoff_city,
        upper(nullif(trim(dropoff_postcode), '')) as dropoff_postcode,  -- Destination postcode, upper-cased; null if blank.
        dropoff_lat,
        dropoff_lon,
        -- [numbers]
        weight_kg,
        parcels,
        order_value,
        -- [categories]
        priority,
        payment_method,
        -- [provenance]
        placeholder_columns  -- Columns holding a source mapping's stand-in, not a measured value (';'-separated).
    from source
)

select * from renamed
