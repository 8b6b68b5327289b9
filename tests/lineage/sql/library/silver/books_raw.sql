-- description: SELECT * over a bronze table, metadata columns included.
SELECT * FROM bronze.books
