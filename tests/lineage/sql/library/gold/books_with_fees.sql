-- description: IN subquery.
SELECT book_id, title FROM silver.books
WHERE book_id IN (SELECT book_id FROM silver.loans WHERE fee > 0)
