-- Daily performance per driver: workload, outcomes, punctuality and distance, for dispatch planning and coaching.
-- Deliveries without a courier (clients whose operations are `carrier`: the carrier's couriers are not ours)
-- are left out: this mart describes our drivers only; fct_deliveries and agg_client_daily_kpis hold them.
-- Held input: deliveries of held (date, client_id) cells (see held_cells in the README) are not in
-- int_deliveries_enriched; a driver's row then counts only the rest, and `complete` is false for the whole date.
-- Float sums and means are rounded (km and kg to 3 decimals, minutes to 2) so a rebuild of the same inputs gives the same file.
-- grain: one row per (date, driver_id)
-- partition_by: date

with deliveries as (
    select * from {{ ref('int_deliveries_enriched') }}
),

drivers as (
    select * from {{ ref('stg_drivers') }}
),

held_dates as (
    select distinct date from held_cells
),

per_driver as (
    select
        date,
        driver_id,
        count(*) as deliveries,
        count_if(status = 'delivered')::BIGINT as delivered,
        count_if(status = 'failed')::BIGINT as failed,
        count_if(status = 'returned')::BIGINT as returned,
        count_if(is_on_time)::BIGINT as on_time,
        count_if(status = 'delivered' and late_minutes > 0)::BIGINT as late,
        round(avg(late_minutes) filter (where late_minutes > 0), 2) as avg_late_minutes,
        round(avg(delivery_minutes), 2) as avg_delivery_minutes,
        round(sum(distance_km), 3) as distance_km,
        round(sum(weight_kg), 3) as weight_kg,
        sum(parcels)::BIGINT as parcels,
        avg(attempts) as avg_attempts,
        count(distinct client_id) as clients_served,
        count(distinct vehicle_id) as vehicles_used
    from deliveries
    where driver_id is not null  -- a carrier client's deliveries: no courier of ours
    group by all
),

final as (
    select
        -- [keys]
        p.date,  -- Dispatch date (UTC).
        p.driver_id,  -- Courier.
        dr.home_depot_id,  -- Home depot of the driver.
        -- [volumes]
        p.deliveries,  -- Deliveries dispatched that day.
        p.delivered,  -- Of which delivered.
        p.failed,  -- Of which failed.
        p.returned,  -- Of which returned to sender.
        p.on_time as on_time_deliveries,  -- Delivered by the promised time.
        p.late as late_deliveries,  -- Delivered after the promised time.
        -- [service]
        p.on_time / p.deliveries as on_time_rate,  -- On-time deliveries / all deliveries dispatched that day.
        p.avg_late_minutes,  -- Mean minutes late over the late deliveries.
        p.avg_delivery_minutes,  -- Mean minutes dispatch -> delivery, delivered only.
        p.avg_attempts,  -- Mean delivery attempts.
        -- [workload]
        p.distance_km,  -- Total route distance.
        p.weight_kg,  -- Total weight carried (orders known).
        p.parcels,  -- Total parcels carried (orders known).
        p.clients_served,  -- Distinct clients served.
        p.vehicles_used,  -- Distinct vehicles used.
        -- [completeness]
        h.date is null as complete  -- False when some deliveries of that date are held back (a blocked partition or an unavailable order): the row counts only the others.
    from per_driver as p
    left join drivers as dr using (driver_id)
    left join held_dates as h using (date)
)

select * from final
