-- description: UNION (distinct) of member and book ids with a literal kind.
SELECT member_id AS id, 'member' AS kind FROM bronze.members
UNION
SELECT book_id, 'book' FROM bronze.books
