-- description: Priced books, price as an exact decimal; a column name with special characters.
SELECT book_id, title, genre, CAST(price AS DECIMAL(10, 2)) AS price, "shelf (code)"
FROM bronze.books
WHERE price IS NOT NULL
