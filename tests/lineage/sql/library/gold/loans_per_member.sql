-- description: Correlated scalar subquery.
SELECT m.member_id,
       (SELECT COUNT(*) FROM silver.loans l WHERE l.member_id = m.member_id) AS loans
FROM silver.members m
