-- description: DISTINCT ON over a model (DataFusion plans it as first_value ... ORDER BY).
SELECT DISTINCT ON (member_id) member_id, book_id, loaned_on
FROM silver.loans
ORDER BY member_id, loaned_on DESC
