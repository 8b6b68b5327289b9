-- description: Window functions: a rank and a running sum per member.
SELECT member_id, loan_id,
       rank() OVER (PARTITION BY member_id ORDER BY loaned_on) AS loan_rank,
       SUM(fee) OVER (PARTITION BY member_id ORDER BY loaned_on ROWS UNBOUNDED PRECEDING) AS running_fee
FROM silver.loans
