-- description: HAVING, ORDER BY and LIMIT.
SELECT genre, COUNT(*) AS loans
FROM silver.loans_enriched
GROUP BY genre
HAVING SUM(fee) > 1
ORDER BY loans DESC
LIMIT 5
