-- description: Ordered aggregate array_agg ... ORDER BY.
SELECT member_id, array_agg(book_id ORDER BY loaned_on) AS books
FROM silver.loans
GROUP BY member_id
