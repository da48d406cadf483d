-- Driver ranking over the whole period: on-time rate, then volume (dense rank, 1 = best),
-- rolled up from the daily driver mart.
WITH per_driver AS (
    SELECT
        driver_id,
        sum(deliveries) AS deliveries,
        sum(on_time_deliveries) AS on_time,
        sum(on_time_deliveries) / sum(deliveries) AS on_time_rate
    FROM agg_driver_daily_performance
    GROUP BY driver_id
)
SELECT
    dense_rank() OVER (ORDER BY on_time_rate DESC, deliveries DESC) AS rank,
    driver_id,
    deliveries,
    on_time,
    on_time_rate
FROM per_driver
ORDER BY rank, driver_id
