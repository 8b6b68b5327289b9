-- materialized: scd2
-- unique_key: customer_id
-- sequence_by: modified_at
-- description: Every version of each customer, valid from its modified_at until the next one: the customer as of any date.
SELECT
    customer_id,
    TRIM(customer_name) AS customer_name,
    LOWER(TRIM(email)) AS email,
    UPPER(TRIM(country)) AS country,
    COALESCE(UPPER(TRIM(region)), 'UNKNOWN') AS region,
    segment,
    created_at,
    modified_at
FROM {{ unprocessed('bronze.customers') }} AS c
