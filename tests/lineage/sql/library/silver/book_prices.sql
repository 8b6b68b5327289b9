-- materialized: scd2
-- unique_key: book_id
-- check_cols: price
-- scd_columns: priced_from, priced_to, current_price
-- description: Price history of each book (scd2, check strategy): a new version when the price changes.
SELECT book_id, title, price
FROM bronze.books
