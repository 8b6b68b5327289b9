-- description: Ordered aggregate first_value: ORDER BY columns are indirect (SORT).
SELECT member_id, first_value(book_id ORDER BY loaned_on) AS first_book
FROM silver.loans
GROUP BY member_id
