-- materialized: table
-- description: TPC-H suppliers of this run's snapshot, char padding removed.
-- expect: supp_key unique fail; nation_key relationships silver.nation.nation_key fail
-- expect: account_balance range -999.99 9999.99 warn
SELECT
    s_suppkey AS supp_key,
    RTRIM(s_name) AS supplier_name,
    s_address AS address,
    s_nationkey AS nation_key,
    RTRIM(s_phone) AS phone,
    s_acctbal AS account_balance,
    s_comment AS comment
FROM bronze.supplier
WHERE _run_id = {{ run_id }}
