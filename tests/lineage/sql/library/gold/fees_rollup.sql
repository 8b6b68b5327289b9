-- description: ROLLUP.
SELECT genre, title, SUM(fee) AS fees
FROM silver.loans_enriched
GROUP BY ROLLUP (genre, title)
