SELECT venue, symbol, market, {{ quote_of('symbol') }} AS quote, ts, trade_id, side, price, amount,
       price * amount AS notional_quote
FROM {{ source('raw', 'trades') }}
