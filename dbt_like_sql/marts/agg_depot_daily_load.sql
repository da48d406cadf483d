-- Daily load per depot: parcels dispatched against the depot's capacity, staff and fleet in use, service.
-- Held input: deliveries of held (date, client_id) cells (see held_cells in the README), whose order and
-- hence pickup depot may be unreadable, are not in int_deliveries_enriched; `complete` is false for that date.
-- Float sums and means are rounded (km and kg to 3 decimals, minutes to 2) so a rebuild of the same inputs gives the same file.
-- grain: one row per (date, depot_id)
-- partition_by: date

with deliveries as (
    select * from {{ ref('int_deliveries_enriched') }}
),

depots as (
    select * from {{ ref('stg_depots') }}
),

held_dates as (
    select distinct date from held_cells
),

per_depot as (
    select
        date,
        depot_id,
        count(*) as deliveries,
        sum(parcels)::BIGINT as parcels,
        round(sum(weight_kg), 3) as weight_kg,
        count(distinct driver_id) as drivers_active,
        count(distinct vehicle_id) as vehicles_used,
        count_if(is_on_time)::BIGINT as on_time,
        count_if(status = 'failed')::BIGINT as failed,
        count_if(status = 'returned')::BIGINT as returned
    from deliveries
    where depot_id is not null
    group by all
),

final as (
    select
        -- [keys]
        p.date,  -- Dispatch date (UTC).
        p.depot_id,  -- Depot the parcels left from.
        dp.depot_city,  -- City the depot serves.
        -- [load]
        p.deliveries,  -- Deliveries dispatched that day.
        p.parcels,  -- Parcels dispatched that day.
        p.weight_kg,  -- Weight dispatched that day.
        dp.daily_capacity_parcels,  -- Parcels the depot can dispatch per day.
        p.parcels / dp.daily_capacity_parcels as capacity_utilization,  -- parcels / daily_capacity_parcels (above 1 = over capacity).
        p.drivers_active,  -- Distinct drivers dispatched.
        p.vehicles_used,  -- Distinct vehicles dispatched.
        -- [service]
        p.on_time / p.deliveries as on_time_rate,  -- On-time deliveries / all deliveries dispatched that day.
        p.failed,  -- Failed deliveries.
        p.returned,  -- Returned deliveries.
        -- [completeness]
        h.date is null as complete  -- False when some deliveries of that date are held back (a blocked partition or an unavailable order): the row counts only the others.
    from per_depot as p
    left join depots as dp using (depot_id)
    left join held_dates as h using (date)
)

select * from final
