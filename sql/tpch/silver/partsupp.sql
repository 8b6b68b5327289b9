-- materialized: table
-- description: TPC-H part suppliers (stock and cost of each part at each supplier) of this run's snapshot.
-- expect: part_key, supp_key unique fail; available_qty range 1 9999 fail; supply_cost range 1 1000 fail
-- expect: part_key relationships silver.part.part_key fail; supp_key relationships silver.supplier.supp_key fail
SELECT
    ps_partkey AS part_key,
    ps_suppkey AS supp_key,
    ps_availqty AS available_qty,
    ps_supplycost AS supply_cost,
    ps_comment AS comment
FROM bronze.partsupp
WHERE _run_id = {{ run_id }}
