-- materialized: table
-- description: TPC-H customers of this run's snapshot, char padding removed.
-- expect: cust_key unique fail; nation_key relationships silver.nation.nation_key fail
-- expect: market_segment accepted_values ('AUTOMOBILE', 'BUILDING', 'FURNITURE', 'HOUSEHOLD', 'MACHINERY') fail
SELECT
    c_custkey AS cust_key,
    c_name AS customer_name,
    c_address AS address,
    c_nationkey AS nation_key,
    RTRIM(c_phone) AS phone,
    c_acctbal AS account_balance,
    RTRIM(c_mktsegment) AS market_segment,
    c_comment AS comment
FROM bronze.customer
WHERE _run_id = {{ run_id }}
