-- materialized: merge
-- unique_key: invoice_id
-- description: Latest version of each invoice, with upper-case currency.
-- expect: shipment_id relationships silver.shipments.shipment_id warn; amount range 0 * warn
SELECT invoice_id, shipment_id, customer_id, amount, currency, issued_date, paid_at, modified_at
FROM (
    SELECT
        invoice_id,
        shipment_id,
        customer_id,
        amount,
        UPPER(currency) AS currency,
        issued_date,
        paid_at,
        modified_at,
        ROW_NUMBER() OVER (PARTITION BY invoice_id ORDER BY modified_at DESC) AS rn
    FROM bronze.invoices
    WHERE _run_id = {{ run_id }}
) v
WHERE rn = 1
