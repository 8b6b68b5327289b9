-- materialized: table
-- description: TPC-H Q10 returned item reporting: the 20 customers whose returned lines lost the most revenue in the quarter from 1993-10-01 (validation value of DATE).
-- expect: cust_key unique fail; revenue range 0 * fail; row_count between 1 and 20 fail
SELECT
    c.cust_key,
    c.customer_name,
    SUM(l.extended_price * (1 - l.discount)) AS revenue,
    c.account_balance,
    n.nation_name,
    c.address,
    c.phone,
    c.comment
FROM silver.customer c
JOIN silver.orders o ON c.cust_key = o.cust_key
JOIN silver.lineitem l ON l.order_key = o.order_key
JOIN silver.nation n ON c.nation_key = n.nation_key
WHERE o.order_date >= DATE '1993-10-01'
  AND o.order_date < DATE '1993-10-01' + INTERVAL '3 months'
  AND l.return_flag = 'R'
GROUP BY c.cust_key, c.customer_name, c.account_balance, c.phone, n.nation_name, c.address, c.comment
ORDER BY revenue DESC
LIMIT 20
