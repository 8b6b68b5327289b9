-- description: Quoted output names with parentheses, commas and non-ASCII characters.
SELECT "shelf (code)" AS "shelf (code)", genre AS "Genre, main", price AS "price €",
       title || ' (' || genre || ')' AS "label (title, genre)"
FROM silver.books
