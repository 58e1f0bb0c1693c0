SELECT venue, symbol, ts, funding_rate, mark_price, index_price FROM {{ source('raw', 'funding') }}
