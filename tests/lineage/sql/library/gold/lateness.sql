-- description: Arithmetic over two columns, a scalar function and a cast.
SELECT loan_id,
       date_part('day', CAST(returned_on AS TIMESTAMP) - CAST(loaned_on AS TIMESTAMP)) AS days_out,
       CAST(fee AS VARCHAR) AS fee_text
FROM silver.loans
WHERE returned_on IS NOT NULL
