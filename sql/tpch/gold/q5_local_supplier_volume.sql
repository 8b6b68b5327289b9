-- materialized: table
-- description: TPC-H Q5 local supplier volume: revenue in 1994 of the orders whose customer and supplier are in the same nation of region ASIA (validation values of REGION and DATE), per nation.
-- expect: nation_name unique fail; revenue range 0 * fail; row_count between 1 and 5 fail
SELECT
    n.nation_name,
    SUM(l.extended_price * (1 - l.discount)) AS revenue
FROM silver.customer c
JOIN silver.orders o ON c.cust_key = o.cust_key
JOIN silver.lineitem l ON l.order_key = o.order_key
JOIN silver.supplier s ON l.supp_key = s.supp_key AND c.nation_key = s.nation_key
JOIN silver.nation n ON s.nation_key = n.nation_key
JOIN silver.region r ON n.region_key = r.region_key
WHERE r.region_name = 'ASIA'
  AND o.order_date >= DATE '1994-01-01'
  AND o.order_date < DATE '1994-01-01' + INTERVAL '1 year'
GROUP BY n.nation_name
ORDER BY revenue DESC
