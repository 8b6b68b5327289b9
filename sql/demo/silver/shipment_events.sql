-- materialized: append
-- description: Every shipment event, appended once, including those of runs whose silver did not run.
-- expect: location not_null quarantine
SELECT DISTINCT
    event_id,
    shipment_id,
    event_type,
    event_at,
    CAST(event_at AS DATE) AS event_date,
    location,
    _run_id AS run_id
FROM {{ unprocessed('bronze.shipment_events') }} AS e
