-- Vehicles, renamed for the marts (depot_id -> base_depot_id).
-- grain: one row per vehicle_id

with source as (
    select * from {{ source('raw', 'vehicles') }}
),

renamed as (
    select
        -- [ids]
        vehicle_id,
        depot_id as base_depot_id,  -- Depot the vehicle is based at.
        -- [attributes]
        vehicle_type,
        capacity_kg,
        fuel_type,
        registered_on,
        placeholder_columns  -- Columns holding a source mapping's stand-in, not a measured value (';'-separated).
    from source
)

select * from renamed
