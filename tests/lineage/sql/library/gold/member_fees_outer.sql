-- description: COALESCE across a FULL OUTER JOIN.
SELECT COALESCE(m.member_id, l.member_id) AS member_id,
       COALESCE(m.city, 'UNKNOWN') AS city,
       l.fee
FROM silver.members m FULL OUTER JOIN silver.loans l ON m.member_id = l.member_id
