-- description: A CTE read twice (a self-join through a CTE).
WITH l AS (SELECT loan_id, member_id, loaned_on FROM silver.loans)
SELECT a.loan_id, b.loan_id AS next_loan_id
FROM l a JOIN l b ON a.member_id = b.member_id AND b.loaned_on > a.loaned_on
