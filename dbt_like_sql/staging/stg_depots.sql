-- Depots, renamed for the marts.
-- grain: one row per depot_id

with source as (
    select * from {{ source('raw', 'depots') }}
),

renamed as (
    select
        -- [ids]
        depot_id,
        -- [attributes]
        city as depot_city,  -- City the depot serves.
        region as depot_region,  -- Region of the depot.
        lat as depot_lat,  -- Depot latitude (WGS84).
        lon as depot_lon,  -- Depot longitude (WGS84).
        daily_capacity_parcels,
        opened_on,
        placeholder_columns  -- Columns holding a source mapping's stand-in, not a measured value (';'-separated).
    from source
)

select * from renamed
