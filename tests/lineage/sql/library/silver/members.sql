-- description: One row per member, the latest version (DISTINCT ON), names trimmed.
SELECT DISTINCT ON (member_id)
       member_id, trim(full_name) AS full_name, upper(city) AS city, joined_on,
       "Phone, mobile" AS phone, tier
FROM bronze.members
ORDER BY member_id, _ingested_at DESC
