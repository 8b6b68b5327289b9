-- description: Struct built and read in place, and a struct kept whole.
SELECT loan_id,
       get_field(named_struct('fee', fee, 'day', loaned_on), 'fee') AS fee_from_struct,
       s['day'] AS day_from_struct,
       s AS loan_struct
FROM (SELECT loan_id, fee, loaned_on, named_struct('day', loaned_on, 'book', book_id) AS s FROM silver.loans) t
