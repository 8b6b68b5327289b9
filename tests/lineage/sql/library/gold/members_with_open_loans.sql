-- description: Correlated EXISTS subquery.
SELECT m.member_id, m.full_name FROM silver.members m
WHERE EXISTS (SELECT 1 FROM silver.loans l WHERE l.member_id = m.member_id AND l.returned_on IS NULL)
