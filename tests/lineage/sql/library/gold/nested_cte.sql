-- description: CTEs, one of them with its own nested CTE.
WITH open_loans AS (
  SELECT loan_id, member_id, fee FROM silver.loans WHERE returned_on IS NULL
), per_member AS (
  WITH fees AS (SELECT member_id, fee * 2 AS doubled FROM open_loans)
  SELECT member_id, SUM(doubled) AS owed FROM fees GROUP BY member_id
)
SELECT p.member_id, m.full_name, p.owed
FROM per_member p JOIN silver.members m ON m.member_id = p.member_id
