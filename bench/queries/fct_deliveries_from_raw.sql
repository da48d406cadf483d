-- Stand-in for the curated mart `fct_deliveries` (issue 3 columns) while the warehouse does
-- not exist: the same definition of on time, computed over the raw landed Parquet.
CREATE VIEW fct_deliveries AS
SELECT
    d.delivery_id,
    d.order_id,
    d.client_id,
    d.driver_id,
    o.pickup_depot_id AS depot,
    CAST(d.dispatched_at AS DATE) AS date,
    o.promised_by,
    d.delivered_at,
    d.status,
    coalesce(d.status = 'delivered' AND d.delivered_at <= o.promised_by, false) AS is_on_time,
    d.distance_km,
    d.attempts,
    o.weight_kg,
    o.priority,
    o.order_value
FROM read_parquet('{lake}/raw/deliveries/**/*.parquet', hive_partitioning = false) AS d
JOIN read_parquet('{lake}/raw/orders/**/*.parquet', hive_partitioning = false) AS o USING (order_id)
