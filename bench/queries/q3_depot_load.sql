-- Depot load per day (grain: date x depot): deliveries dispatched, weight, active drivers,
-- from the daily depot mart.
SELECT
    date,
    depot_id AS depot,
    deliveries,
    weight_kg,
    drivers_active AS drivers
FROM agg_depot_daily_load
ORDER BY date, depot
