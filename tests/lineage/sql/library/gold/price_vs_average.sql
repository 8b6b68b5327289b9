-- description: Uncorrelated scalar subquery.
SELECT b.book_id, b.price, b.price - (SELECT AVG(price) FROM silver.books) AS price_vs_avg
FROM silver.books b
