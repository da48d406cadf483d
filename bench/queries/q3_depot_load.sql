-- Depot load per day (grain: date x depot): deliveries dispatched, weight, active drivers.
SELECT
    date,
    depot,
    count(*) AS deliveries,
    sum(weight_kg) AS weight_kg,
    count(DISTINCT driver_id) AS drivers
FROM fct_deliveries
GROUP BY date, depot
ORDER BY date, depot
