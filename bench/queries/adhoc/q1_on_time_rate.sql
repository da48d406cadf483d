-- Ad hoc, from fct_deliveries (3.6M rows at 1x): on-time rate per client per day (grain: date x client_id), on the dispatch date.
SELECT
    date,
    client_id,
    count(*) AS deliveries,
    count(*) FILTER (WHERE is_on_time) AS on_time,
    count(*) FILTER (WHERE is_on_time) / count(*) AS on_time_rate
FROM fct_deliveries
GROUP BY date, client_id
ORDER BY date, client_id
