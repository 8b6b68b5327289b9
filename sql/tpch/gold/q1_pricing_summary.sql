-- materialized: table
-- description: TPC-H Q1 pricing summary report: quantities, prices, discounts and charges of the lines shipped up to 90 days (DELTA, the validation value) before 1998-12-01, per return flag and line status.
-- expect: return_flag, line_status unique fail; row_count between 1 and 6 fail
SELECT
    return_flag,
    line_status,
    SUM(quantity) AS sum_qty,
    SUM(extended_price) AS sum_base_price,
    SUM(extended_price * (1 - discount)) AS sum_disc_price,
    SUM(extended_price * (1 - discount) * (1 + tax)) AS sum_charge,
    AVG(quantity) AS avg_qty,
    AVG(extended_price) AS avg_price,
    AVG(discount) AS avg_disc,
    COUNT(*) AS count_order
FROM silver.lineitem
WHERE ship_date <= DATE '1998-12-01' - INTERVAL '90 days'
GROUP BY return_flag, line_status
ORDER BY return_flag, line_status
