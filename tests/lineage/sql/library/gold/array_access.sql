-- description: Array built and indexed with a literal, and an array kept whole.
SELECT loan_id,
       make_array(loaned_on, returned_on)[2] AS returned,
       make_array(member_id, book_id) AS ids
FROM silver.loans
