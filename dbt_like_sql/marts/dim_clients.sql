-- Client dimension: who ships with us, their tier and SLA (current snapshot).
-- grain: one row per client_id

with clients as (
    select * from {{ ref('stg_clients') }}
),

final as (
    select
        -- [ids]
        client_id,  -- Client key, e.g. C001.
        -- [attributes]
        client_name,  -- Trading name.
        industry,  -- Industry segment.
        tier,  -- Commercial tier; drives the SLA.
        sla_hours,  -- Contracted hours from order to delivery.
        region,  -- Home region.
        onboarded_on,  -- Contract start date.
        contact_email,  -- Operations contact (lower-cased).
        is_active,  -- Whether the contract is live.
        operations,  -- How its parcels travel: own_fleet, or carrier (its deliveries have no courier, vehicle or distance of ours, and the driver and vehicle marts leave them out).
        -- [provenance]
        placeholder_columns  -- Columns of this row holding a source mapping's stand-in, not a client's real value.
    from clients
)

select * from final
