SELECT venue, symbol, ts, funding_rate FROM {{ source('raw', 'funding') }}
