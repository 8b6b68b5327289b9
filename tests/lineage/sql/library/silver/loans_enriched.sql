-- description: Loans with member and book attributes (two LEFT JOINs).
SELECT l.loan_id, l.loaned_on, l.returned_on, l.fee, m.full_name, m.city, b.title, b.genre
FROM silver.loans l
LEFT JOIN silver.members m ON m.member_id = l.member_id
LEFT JOIN silver.books b ON b.book_id = l.book_id
