-- materialized: merge
-- unique_key: invoice_id
-- sequence_by: modified_at
-- description: Latest version of each invoice, with upper-case currency.
-- expect: shipment_id relationships silver.shipments.shipment_id warn; amount range 0 * warn
SELECT
    invoice_id,
    shipment_id,
    customer_id,
    amount,
    UPPER(currency) AS currency,
    issued_date,
    paid_at,
    modified_at
FROM {{ unprocessed('bronze.invoices') }} AS i
