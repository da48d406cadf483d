-- Driver dimension: couriers with their home depot's city and region (current snapshot).
-- grain: one row per driver_id

with drivers as (
    select * from {{ ref('stg_drivers') }}
),

depots as (
    select * from {{ ref('stg_depots') }}
),

final as (
    select
        -- [ids]
        drivers.driver_id,  -- Driver key, e.g. DR0001.
        drivers.home_depot_id,  -- Home depot.
        -- [attributes]
        drivers.driver_name,  -- Driver name.
        depots.depot_city as home_depot_city,  -- City of the home depot.
        depots.depot_region as home_depot_region,  -- Region of the home depot.
        drivers.hired_on,  -- Hire date; tenure is measured from it.
        drivers.employment_type,  -- Contract type: employee or contractor.
        drivers.license_class,  -- Driving licence class.
        -- [provenance]
        drivers.placeholder_columns  -- Columns of this row holding a source mapping's stand-in.
    from drivers
    left join depots on drivers.home_depot_id = depots.depot_id
)

select * from final
