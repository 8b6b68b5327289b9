-- description: Aggregate FILTER (WHERE ...).
SELECT member_id, COUNT(*) FILTER (WHERE returned_on IS NULL) AS open_loans, SUM(fee) AS fees
FROM silver.loans
GROUP BY member_id
