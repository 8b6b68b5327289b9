-- description: SELECT * over a join of two models.
SELECT * FROM silver.members_without_loans w JOIN silver.members m USING (member_id)
