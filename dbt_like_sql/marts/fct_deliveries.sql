-- Delivery fact: every delivery with its order attributes and the governed on-time verdict.
-- is_on_time = status 'delivered' and delivered_at <= promised_by; every delivery here has its order.
-- Held input: deliveries of held (date, client_id) cells (a blocked partition, or an order the gate holds back;
-- see held_cells in the README) are not in int_deliveries_enriched, so not here either: the build manifest lists them.
-- grain: one row per delivery_id, partitioned by dispatch date
-- partition_by: date

with deliveries as (
    select * from {{ ref('int_deliveries_enriched') }}
),

final as (
    select
        -- [ids]
        delivery_id,  -- Delivery key.
        order_id,  -- Order delivered.
        client_id,  -- Client of the order.
        driver_id,  -- Courier.
        vehicle_id,  -- Vehicle the delivery was made with.
        depot_id as depot,  -- Depot the parcels left from (the order's pickup depot).
        -- [timestamps]
        date,  -- Dispatch date (UTC); the partition.
        promised_by,  -- Delivery deadline promised to the customer (UTC).
        delivered_at,  -- Handed over (UTC); null unless delivered.
        -- [outcome]
        status,  -- Final outcome: delivered, failed or returned.
        is_on_time,  -- Delivered and delivered_at <= promised_by.
        late_minutes,  -- Minutes after promised_by; 0 if on time, null if not delivered.
        delivery_minutes,  -- Minutes from dispatch to hand-over; null if not delivered.
        -- [numbers]
        distance_km,  -- Route distance depot to drop-off; null for a carrier client or a stand-in.
        attempts,  -- Delivery attempts made; null where the source does not export them.
        weight_kg,  -- Total weight of the order; null where the source does not export it.
        priority,  -- Service level bought.
        order_value,  -- Price charged to the client for the order; null where the source has no price.
        -- [provenance]
        placeholder_columns  -- Columns of the delivery or its order holding a source mapping's stand-in (';'-separated); stand-in measures (attempts, distance, weight, parcels, value) are null.
    from deliveries
)

select * from final
