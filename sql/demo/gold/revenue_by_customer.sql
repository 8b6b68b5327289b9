-- materialized: table
-- description: Invoiced and paid revenue per customer.
SELECT
    c.customer_id,
    c.customer_name,
    c.segment,
    c.region,
    COUNT(i.invoice_id) AS invoices,
    SUM(i.amount) AS invoiced_amount,
    SUM(CASE WHEN i.paid_at IS NOT NULL THEN i.amount ELSE 0 END) AS paid_amount
FROM silver.customers c
JOIN silver.invoices i ON i.customer_id = c.customer_id
GROUP BY c.customer_id, c.customer_name, c.segment, c.region
