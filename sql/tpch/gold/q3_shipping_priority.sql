-- materialized: table
-- description: TPC-H Q3 shipping priority: the 10 unshipped orders of the BUILDING segment with the highest revenue as of 1995-03-15 (validation values of SEGMENT and DATE).
-- expect: order_key unique fail; revenue range 0 * fail; row_count between 1 and 10 fail
SELECT
    l.order_key,
    SUM(l.extended_price * (1 - l.discount)) AS revenue,
    o.order_date,
    o.ship_priority
FROM silver.customer c
JOIN silver.orders o ON c.cust_key = o.cust_key
JOIN silver.lineitem l ON l.order_key = o.order_key
WHERE c.market_segment = 'BUILDING'
  AND o.order_date < DATE '1995-03-15'
  AND l.ship_date > DATE '1995-03-15'
GROUP BY l.order_key, o.order_date, o.ship_priority
ORDER BY revenue DESC, o.order_date
LIMIT 10
