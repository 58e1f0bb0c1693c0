SELECT venue, endpoint, ts, latency_ms, ok, error FROM {{ source('raw', 'latency') }}
