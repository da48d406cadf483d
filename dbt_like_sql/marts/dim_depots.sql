-- Depot dimension: location and capacity, with the drivers and vehicles based there (current snapshot).
-- grain: one row per depot_id

with depots as (
    select * from {{ ref('stg_depots') }}
),

drivers as (
    select home_depot_id as depot_id, count(*) as drivers from {{ ref('stg_drivers') }} group by all
),

vehicles as (
    select base_depot_id as depot_id, count(*) as vehicles, sum(capacity_kg) as fleet_capacity_kg
    from {{ ref('stg_vehicles') }}
    group by all
),

final as (
    select
        -- [ids]
        depots.depot_id,  -- Depot key, e.g. D01.
        -- [location]
        depots.depot_city,  -- City the depot serves.
        depots.depot_region,  -- Region.
        depots.depot_lat,  -- Latitude (WGS84).
        depots.depot_lon,  -- Longitude (WGS84).
        -- [capacity]
        depots.daily_capacity_parcels,  -- Parcels the depot can dispatch per day.
        coalesce(drivers.drivers, 0) as drivers,  -- Drivers whose home depot this is.
        coalesce(vehicles.vehicles, 0) as vehicles,  -- Vehicles based here.
        coalesce(vehicles.fleet_capacity_kg, 0) as fleet_capacity_kg,  -- Total payload of those vehicles.
        depots.opened_on,  -- Opening date.
        -- [provenance]
        depots.placeholder_columns  -- Columns of this row holding a source mapping's stand-in (a depot standing for a carrier: all of them).
    from depots
    left join drivers using (depot_id)
    left join vehicles using (depot_id)
)

select * from final
