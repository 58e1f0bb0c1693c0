SELECT venue, symbol, market, {{ quote_of('symbol') }} AS quote, ts, open, high, low, close, volume
FROM {{ source('raw', 'candles') }}
