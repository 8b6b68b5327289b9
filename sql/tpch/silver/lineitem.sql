-- materialized: table
-- description: TPC-H order lines of this run's snapshot, char padding removed.
-- expect: order_key, line_number unique fail; quantity range 1 50 fail; discount range 0 0.10 fail; tax range 0 0.08 fail
-- expect: return_flag accepted_values ('A', 'N', 'R') fail; line_status accepted_values ('F', 'O') fail
-- expect: receipt_date > ship_date fail; order_key relationships silver.orders.order_key fail
SELECT
    l_orderkey AS order_key,
    l_partkey AS part_key,
    l_suppkey AS supp_key,
    l_linenumber AS line_number,
    l_quantity AS quantity,
    l_extendedprice AS extended_price,
    l_discount AS discount,
    l_tax AS tax,
    RTRIM(l_returnflag) AS return_flag,
    RTRIM(l_linestatus) AS line_status,
    l_shipdate AS ship_date,
    l_commitdate AS commit_date,
    l_receiptdate AS receipt_date,
    RTRIM(l_shipinstruct) AS ship_instruct,
    RTRIM(l_shipmode) AS ship_mode,
    l_comment AS comment
FROM bronze.lineitem
WHERE _run_id = {{ run_id }}
