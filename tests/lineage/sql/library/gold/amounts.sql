-- description: UNION ALL of two models.
SELECT member_id AS id, fee AS amount FROM silver.loans
UNION ALL
SELECT book_id, price FROM silver.books
