-- Ad hoc, from fct_deliveries (3.6M rows at 1x): driver ranking over the whole period: on-time rate, then volume (dense rank, 1 = best).
WITH per_driver AS (
    SELECT
        driver_id,
        count(*) AS deliveries,
        count(*) FILTER (WHERE is_on_time) AS on_time,
        count(*) FILTER (WHERE is_on_time) / count(*) AS on_time_rate
    FROM fct_deliveries
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
