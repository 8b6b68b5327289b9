-- description: GROUPING SETS.
SELECT genre, city, COUNT(*) AS loans, SUM(fee) AS fees
FROM silver.loans_enriched
GROUP BY GROUPING SETS ((genre), (city), ())
