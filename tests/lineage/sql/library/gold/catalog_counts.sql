-- description: COUNT(DISTINCT) over a UNION model; a constant column.
SELECT kind, COUNT(DISTINCT id) AS ids, 'library' AS source_name
FROM silver.catalog_ids
GROUP BY kind
