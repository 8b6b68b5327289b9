-- materialized: table
-- description: On-time delivery rate per carrier and month of delivery.
SELECT
    carrier_code,
    DATE_TRUNC('month', delivered_at) AS delivery_month,
    COUNT(*) AS delivered,
    SUM(CASE WHEN delivered_date <= promised_date + {{ var.on_time_grace_days }} THEN 1 ELSE 0 END) AS on_time,
    CAST(SUM(CASE WHEN delivered_date <= promised_date + {{ var.on_time_grace_days }} THEN 1 ELSE 0 END) AS DOUBLE)
        / COUNT(*) AS on_time_rate
FROM silver.shipments_enriched
WHERE status = 'DELIVERED'
GROUP BY carrier_code, DATE_TRUNC('month', delivered_at)
