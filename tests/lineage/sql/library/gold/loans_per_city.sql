-- description: Unaliased aggregates: their column names hold parentheses and dots.
SELECT m.city, COUNT(l.loan_id), SUM(l.fee)
FROM silver.loans l JOIN silver.members m ON m.member_id = l.member_id
GROUP BY m.city
