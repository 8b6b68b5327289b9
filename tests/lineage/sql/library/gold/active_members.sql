-- description: INTERSECT.
SELECT member_id FROM silver.loans
INTERSECT
SELECT member_id FROM silver.members WHERE city = 'LONDON'
