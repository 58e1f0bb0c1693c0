{{ config(pre_hook="{{ delete_window('hour') }}") }}
SELECT venue, endpoint, date_trunc('hour', ts) AS hour,
       count(*) AS samples,
       count(*) FILTER (WHERE NOT ok) AS failures,
       (count(*) FILTER (WHERE NOT ok))::DOUBLE / count(*) AS error_rate,
       quantile_cont(latency_ms, 0.50) FILTER (WHERE ok) AS p50_ms,
       quantile_cont(latency_ms, 0.95) FILTER (WHERE ok) AS p95_ms,
       quantile_cont(latency_ms, 0.99) FILTER (WHERE ok) AS p99_ms
FROM {{ ref('stg_latency') }}
WHERE {{ in_window('ts') }}
GROUP BY ALL
