-- On-time rate per client per day (grain: date x client_id), on the dispatch date, from the
-- mart the curated layer keeps for it (rows for feedback-only days carry no deliveries).
SELECT
    date,
    client_id,
    deliveries,
    on_time,
    on_time_rate
FROM agg_client_daily_kpis
WHERE deliveries > 0
ORDER BY date, client_id
