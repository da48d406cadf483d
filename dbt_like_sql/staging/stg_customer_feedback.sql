-- Customer feedback from the raw partitions the quality gate let through; comments trimmed, blank ones null.
-- grain: one row per feedback_id

with source as (
    select * from {{ source('raw', 'customer_feedback') }}
),

renamed as (
    select
        -- [ids]
        feedback_id,
        order_id,
        client_id,
        -- [timestamps]
        submitted_at,
        date as submitted_date,  -- UTC date of submitted_at (the raw partition).
        -- [content]
        rating,
        nullif(trim(replace(comment, chr(13), '')), '') as comment,  -- Free text, trimmed, CR removed; null if blank.
        channel,
        placeholder_columns  -- Columns holding a source mapping's stand-in, not a measured value (';'-separated).
    from source
)

select * from renamed
