-- materialized: merge
-- unique_key: customer_id
-- description: Latest version of each customer, with region and email normalised.
-- expect: email not_null warn
WITH ranked AS (
    SELECT
        c.*,
        ROW_NUMBER() OVER (PARTITION BY c.customer_id ORDER BY c.modified_at DESC) AS rn
    FROM bronze.customers c
    WHERE c._run_id = {{ run_id }}
)
SELECT
    customer_id,
    TRIM(customer_name) AS customer_name,
    LOWER(TRIM(email)) AS email,
    UPPER(TRIM(country)) AS country,
    COALESCE(UPPER(TRIM(region)), 'UNKNOWN') AS region,
    segment,
    created_at,
    modified_at
FROM ranked
WHERE rn = 1
