-- materialized: table
-- description: Conformed shipments joined to customers, carriers and warehouses.
SELECT
    s.shipment_id,
    s.status,
    s.weight_kg,
    s.declared_value,
    s.ship_date,
    s.promised_date,
    s.delivered_at,
    CAST(s.delivered_at AS DATE) AS delivered_date,
    s.destination_country,
    c.customer_id,
    c.customer_name,
    c.segment,
    c.region AS customer_region,
    k.carrier_code,
    k.mode AS carrier_mode,
    w.warehouse_code,
    w.region AS origin_region
FROM silver.shipments s
LEFT JOIN silver.customers c ON c.customer_id = s.customer_id
LEFT JOIN silver.carriers k ON k.carrier_id = s.carrier_id
LEFT JOIN silver.warehouses w ON w.warehouse_id = s.origin_warehouse_id
