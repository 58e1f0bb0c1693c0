SELECT venue, symbol, market, {{ quote_of('symbol') }} AS quote, ts, bid, ask, bid_size, ask_size,
       (bid + ask) / 2 AS mid,
       (ask - bid) / ((bid + ask) / 2) * 1e4 AS spread_bps,
       (bid_size * bid + ask_size * ask) / 2 AS depth_quote
FROM {{ source('raw', 'books') }}
