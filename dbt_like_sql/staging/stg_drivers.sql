-- Drivers, renamed for the marts (depot_id -> home_depot_id).
-- grain: one row per driver_id

with source as (
    select * from {{ source('raw', 'drivers') }}
),

renamed as (
    select
        -- [ids]
        driver_id,
        depot_id as home_depot_id,  -- Home depot of the driver.
        -- [attributes]
        trim(full_name) as driver_name,  -- Driver name.
        hired_on,
        employment_type,
        license_class,
        placeholder_columns  -- Columns holding a source mapping's stand-in, not a measured value (';'-separated).
    from source
)

select * from renamed
