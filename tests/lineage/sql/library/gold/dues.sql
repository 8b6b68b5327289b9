-- description: CASE: conditions are indirect (CONDITIONAL), results direct.
SELECT loan_id,
       CASE WHEN returned_on IS NULL THEN fee * 2 ELSE fee END AS due,
       CASE genre WHEN 'cs' THEN 'technical' ELSE 'other' END AS shelf_kind
FROM silver.loans_enriched
