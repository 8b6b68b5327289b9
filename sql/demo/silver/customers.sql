-- materialized: merge
-- unique_key: customer_id
-- sequence_by: modified_at
-- description: Latest version of each customer, with region and email normalised.
-- expect: email not_null warn
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
