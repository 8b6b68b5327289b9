-- description: Self-join: members of the same city.
SELECT a.member_id, b.member_id AS neighbour_id, a.city
FROM silver.members a JOIN silver.members b ON a.city = b.city AND a.member_id < b.member_id
