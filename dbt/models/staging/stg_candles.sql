-- bar_seconds from the ccxt timeframe: 1m -> 60, 5m -> 300, 1h -> 3600, 8h -> 28800, 1d -> 86400 (M = month)
SELECT venue, symbol, market, {{ quote_of('symbol') }} AS quote, timeframe,
       CAST(regexp_extract(timeframe, '^([0-9]+)', 1) AS BIGINT)
           * CASE regexp_extract(timeframe, '([smhdwM])$', 1)
                 WHEN 's' THEN 1 WHEN 'm' THEN 60 WHEN 'h' THEN 3600 WHEN 'd' THEN 86400
                 WHEN 'w' THEN 604800 WHEN 'M' THEN 2592000 END AS bar_seconds,
       ts, open, high, low, close, volume
FROM {{ source('raw', 'candles') }}
