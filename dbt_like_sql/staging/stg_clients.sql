-- Clients snapshot, renamed for the marts (name -> client_name) with the contact e-mail normalised.
-- grain: one row per client_id

with source as (
    select * from {{ source('raw', 'clients') }}
),

renamed as (
    select
        -- [ids]
        client_id,
        -- [attributes]
        name as client_name,  -- Trading name.
        industry,
        tier,
        sla_hours,
        region,
        onboarded_on,
        lower(nullif(trim(contact_email), '')) as contact_email,  -- Operations contact, lower-cased; null if blank.
        is_active,
        coalesce(operations, 'own_fleet') as operations,  -- How its parcels travel: own_fleet (default) or carrier.
        placeholder_columns  -- Columns holding a source mapping's stand-in, not a measured value (';'-separated).
    from source
)

select * from renamed
