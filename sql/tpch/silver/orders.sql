-- materialized: table
-- description: TPC-H orders of this run's snapshot, char padding removed.
-- expect: order_key unique fail; order_status accepted_values ('F', 'O', 'P') fail; order_date not_null fail
-- expect: cust_key relationships silver.customer.cust_key fail; total_price range 0 * fail
SELECT
    o_orderkey AS order_key,
    o_custkey AS cust_key,
    RTRIM(o_orderstatus) AS order_status,
    o_totalprice AS total_price,
    o_orderdate AS order_date,
    RTRIM(o_orderpriority) AS order_priority,
    RTRIM(o_clerk) AS clerk,
    o_shippriority AS ship_priority,
    o_comment AS comment
FROM bronze.orders
WHERE _run_id = {{ run_id }}
