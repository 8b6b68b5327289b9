-- description: Loans of the latest version per loan id (row_number window).
SELECT loan_id, member_id, book_id, loaned_on, returned_on, fee
FROM (
  SELECT *, row_number() OVER (PARTITION BY loan_id ORDER BY _ingested_at DESC) AS rn
  FROM bronze.loans
) t
WHERE rn = 1 AND fee >= 0
