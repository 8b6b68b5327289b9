-- description: EXCEPT: members that never borrowed.
SELECT member_id FROM bronze.members
EXCEPT
SELECT member_id FROM bronze.loans
