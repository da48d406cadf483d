-- Daily service KPIs per client: volumes, outcomes, on-time rate, speed, satisfaction and revenue.
-- Deliveries count on their dispatch date; ratings on the date the feedback was submitted.
-- Held input: a (date, client_id) cell whose deliveries or feedback are held back (blocked, or orders
-- unavailable; see held_cells in the README) has no row at all, never one with zeros or a rate computed
-- from part of the day. A cell with feedback but no deliveries is a real row (deliveries = 0).
-- Float sums and means are rounded (km and kg to 3 decimals, minutes to 2) so a rebuild of the same inputs gives the same file.
-- grain: one row per (date, client_id)
-- partition_by: date

with deliveries as (
    select * from {{ ref('int_deliveries_enriched') }}
),

feedback as (
    select * from {{ ref('stg_customer_feedback') }}
),

delivery_kpis as (
    select
        date,
        client_id,
        count(*) as deliveries,
        count_if(status = 'delivered')::BIGINT as delivered,
        count_if(status = 'failed')::BIGINT as failed,
        count_if(status = 'returned')::BIGINT as returned,
        count_if(is_on_time)::BIGINT as on_time,
        round(avg(delivery_minutes), 2) as avg_delivery_minutes,
        sum(order_value) as revenue,
        count_if(order_value is null)::BIGINT as unpriced
    from deliveries
    anti join held_cells as held using (date, client_id)
    group by all
),

feedback_kpis as (
    select
        submitted_date as date,
        client_id,
        avg(rating) as avg_rating
    from feedback
    anti join held_cells as held on held.date = feedback.submitted_date and held.client_id = feedback.client_id
    group by all
),

final as (
    select
        -- [keys]
        coalesce(d.date, f.date) as date,  -- Calendar date (UTC).
        coalesce(d.client_id, f.client_id) as client_id,  -- Client.
        -- [volumes]
        coalesce(d.deliveries, 0) as deliveries,  -- Deliveries dispatched that day.
        coalesce(d.delivered, 0) as delivered,  -- Of which delivered.
        coalesce(d.failed, 0) as failed,  -- Of which failed.
        coalesce(d.returned, 0) as returned,  -- Of which returned to sender.
        coalesce(d.on_time, 0) as on_time,  -- Of which delivered by the promised time.
        -- [service]
        d.on_time / nullif(d.deliveries, 0) as on_time_rate,  -- On-time deliveries / all deliveries dispatched that day.
        d.avg_delivery_minutes,  -- Mean minutes dispatch -> delivery, delivered only.
        f.avg_rating,  -- Mean stars of the feedback submitted that day.
        -- [money]
        -- 0 for a day without deliveries; null when no delivery of the day has a known value
        case when d.deliveries is null then 0 else d.revenue end::DECIMAL(14, 2) as revenue,  -- Sum of order_value of the deliveries dispatched that day (those with a known value).
        coalesce(d.unpriced, 0) as unpriced_deliveries  -- Deliveries whose order value is a source's stand-in, left out of revenue.
    from delivery_kpis as d
    full outer join feedback_kpis as f
        on d.date = f.date and d.client_id = f.client_id
)

select * from final
