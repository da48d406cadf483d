-- Ad hoc, from fct_deliveries (3.6M rows at 1x): depot load per day (grain: date x depot): deliveries dispatched, weight, active drivers.
SELECT
    date,
    depot,
    count(*) AS deliveries,
    round(sum(weight_kg), 3) AS weight_kg,  -- as the mart rounds it
    count(DISTINCT driver_id) AS drivers
FROM fct_deliveries
GROUP BY date, depot
ORDER BY date, depot
