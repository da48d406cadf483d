-- Each delivery joined to its order, with the on-time verdict and durations every mart shares.
-- One definition of "on time": delivered, and delivered_at <= promised_by.
-- Stand-in values (placeholder_columns, set where a client's export lacks a column; see sources/) are
-- measures nobody measured: attempts, distance, weight, parcels and value read as unknown (null) here,
-- so no mart sums or averages them, and placeholder_columns says which of the row's columns are stand-ins.
-- Held input (see held_cells in the README): a delivery lands only once its order has, so an order
-- the build cannot read sits in a partition the gate blocked; every delivery of a held (date, client_id)
-- cell is left out, never computed with null order attributes (inner semantics for unavailable orders).
-- grain: one row per delivery_id
-- partition_by: date
-- materialized: table
-- (orders are read three days back: created up to two days before dispatch, three covers
-- midnight crossings; deliveries only for the dates built. The runner finds an order created
-- earlier wherever it landed: the lookback only decides what is read first.)
-- (a table, not a view: four marts read it, and each used to re-derive it from four days of raw orders)

with deliveries as (
    select d.*
    from {{ ref('stg_deliveries') }} as d
    anti join held_cells as held
        on held.date = d.dispatch_date and held.client_id = d.client_id
),

orders as (
    -- a key seen in two partitions must not fan deliveries out: its latest copy wins
    -- (one arg_max pass; QUALIFY row_number() = 1 read the four days of orders twice: 0.65 -> 0.54 s a day)
    select
        order_id,
        unnest(arg_max(
            struct_pack(depot_id, created_at, promised_by, weight_kg, parcels, priority, order_value, placeholder_columns),
            created_at
        ))
    from {{ ref('stg_orders', lookback_days=3) }}
    group by order_id
),

joined as (
    select
        d.* exclude (placeholder_columns),
        -- the stand-ins of the delivery and of its order, by the names they have here
        list_concat(
            coalesce(string_split(d.placeholder_columns, ';'), []),
            list_transform(
                coalesce(string_split(o.placeholder_columns, ';'), []),
                lambda x: case x when 'pickup_depot_id' then 'depot_id' else x end
            )
        ) as stand_ins,
        o.depot_id,
        o.created_at,
        o.promised_by,
        o.weight_kg,
        o.parcels,
        o.priority,
        o.order_value
    from deliveries as d
    -- left, not inner: the held cells took out every delivery whose order is unavailable, so a
    -- null here would be a runner bug the fct_deliveries suite reports, not a delivery lost unseen
    left join orders as o using (order_id)
),

final as (
    select
        -- [ids]
        delivery_id,
        order_id,
        client_id,
        driver_id,
        vehicle_id,
        depot_id,
        -- [dates]
        dispatch_date as date,  -- Dispatch date (UTC).
        created_at,
        dispatched_at,
        promised_by,
        delivered_at,
        -- [outcome]
        status,
        failure_reason,
        status = 'delivered' and delivered_at <= promised_by as is_on_time,  -- Delivered by the promise.
        case
            when status = 'delivered' and promised_by is not null
                then greatest(date_diff('second', promised_by, delivered_at), 0) / 60.0
        end as late_minutes,  -- Minutes after promised_by; 0 if on time, null if not delivered.
        case
            when status = 'delivered' then date_diff('second', dispatched_at, delivered_at) / 60.0
        end as delivery_minutes,  -- Minutes from dispatch to delivery; delivered only.
        -- [numbers] a stand-in measure is unknown, never a number to add up
        case when not list_contains(stand_ins, 'attempts') then attempts end as attempts,
        case when not list_contains(stand_ins, 'distance_km') then distance_km end as distance_km,
        case when not list_contains(stand_ins, 'weight_kg') then weight_kg end as weight_kg,
        case when not list_contains(stand_ins, 'parcels') then parcels end as parcels,
        priority,
        case when not list_contains(stand_ins, 'order_value') then order_value end as order_value,
        -- [provenance]
        nullif(array_to_string(list_sort(list_distinct(stand_ins)), ';'), '') as placeholder_columns  -- Columns of the delivery or its order holding a source mapping's stand-in (';'-separated); stand-in measures are null here.
    from joined
)

select * from final
