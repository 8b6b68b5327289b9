-- materialized: scd2
-- unique_key: member_id
-- sequence_by: seen_at
-- description: Every version of a member (scd2, timestamp strategy): the history columns trace to the key and the version column.
SELECT member_id, upper(city) AS city, tier, _ingested_at AS seen_at
FROM bronze.members
