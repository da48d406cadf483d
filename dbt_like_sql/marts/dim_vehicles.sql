-- Vehicle dimension: the fleet with its base depot's city and region (current snapshot).
-- grain: one row per vehicle_id

with vehicles as (
    select * from {{ ref('stg_vehicles') }}
),

depots as (
    select * from {{ ref('stg_depots') }}
),

final as (
    select
        -- [ids]
        vehicles.vehicle_id,  -- Vehicle key, e.g. V0001.
        vehicles.base_depot_id,  -- Depot the vehicle is based at.
        -- [attributes]
        depots.depot_city as base_depot_city,  -- City of the base depot.
        vehicles.vehicle_type,  -- Vehicle class.
        vehicles.capacity_kg,  -- Payload capacity.
        vehicles.fuel_type,  -- Energy source.
        vehicles.registered_on,  -- First registration date.
        -- [provenance]
        vehicles.placeholder_columns  -- Columns of this row holding a source mapping's stand-in.
    from vehicles
    left join depots on vehicles.base_depot_id = depots.depot_id
)

select * from final
