{{ config(pre_hook="{{ delete_window('hour') }}", on_schema_change="append_new_columns") }}
-- Every input is aggregated to one row per venue, symbol and hour first; what derives from the symbol alone
-- (quote currency, USD conversion) is computed on those rows, not on each of the ~100M input rows.
WITH books AS (
    SELECT venue, symbol, market, date_trunc('hour', ts) AS hour,
           avg(mid) AS mid_mean, avg(spread_bps) AS spread_bps_mean, median(spread_bps) AS spread_bps_p50,
           avg(depth_quote) AS depth_quote_mean, count(*) AS n_books
    FROM {{ ref('stg_books') }} WHERE {{ in_window('ts') }} GROUP BY ALL
), candle_hours AS (
    -- each hour's closes in time order, of the finest timeframe the venue/symbol has in that hour (bars longer
    -- than an hour say nothing about one hour); sorting the closes of every hour is far cheaper than a window
    -- ordering all candles of a symbol, and gives each close the same predecessor
    SELECT venue, symbol, market, date_trunc('hour', ts) AS hour, timeframe AS candle_timeframe, bar_seconds,
           sum(volume) AS volume_base, sum(volume * close) AS volume_quote, list(close ORDER BY ts) AS closes
    FROM {{ ref('stg_candles') }} WHERE {{ in_window('ts') }} AND bar_seconds <= 3600 GROUP BY 1, 2, 3, 4, 5, 6
    QUALIFY bar_seconds = min(bar_seconds) OVER (PARTITION BY venue, symbol, hour)
), candles AS (
    -- log returns per bar (the hour's first against the previous hour's last close), their sample stddev
    -- stated per 1 minute: a random walk's stddev scales with sqrt(time), so x sqrt(60 s / bar seconds)
    SELECT venue, symbol, market, hour, candle_timeframe, volume_base, volume_quote,
           list_stddev_samp(list_transform(closes, lambda c, i: ln(c / if(i = 1, prev_close, closes[i - 1]))))
               * sqrt(60.0 / bar_seconds) AS volatility_1m
    FROM (SELECT *, lag(closes[-1]) OVER (PARTITION BY venue, symbol ORDER BY hour) AS prev_close
          FROM candle_hours)
), trades AS (
    SELECT venue, symbol, date_trunc('hour', ts) AS hour, count(*) AS trades,
           sum(amount) AS trade_volume_base, sum(amount * price) AS trade_volume_quote
    FROM {{ ref('stg_trades') }} WHERE {{ in_window('ts') }} GROUP BY ALL
), fx AS (
    SELECT date_trunc('hour', ts) AS hour, avg(rate) AS usd_try
    FROM {{ ref('stg_fx') }} WHERE pair = 'USD/TRY' AND {{ in_window('ts') }} GROUP BY ALL
{%- set usd_at_par = "('USD', 'USDT', 'USDC', 'BUSD', 'FDUSD', 'TUSD', 'DAI')" %}
), hour_prices AS (
    -- each venue/symbol's price in the hour: the books' mean mid, else the hour's last candle close
    SELECT coalesce(b.symbol, c.symbol) AS symbol, coalesce(b.hour, c.hour) AS hour,
           coalesce(b.mid_mean, c.closes[-1]) AS price
    FROM books b FULL OUTER JOIN candle_hours c USING (venue, symbol, hour)
), usd_crosses AS (
    -- USD per unit of a currency in the hour through a pair against a USD stablecoin on any venue (ETH/USDT for
    -- ETH), or its inverse (USDT/ETH); `via` names the pair(s)
    SELECT hour, currency, avg(usd_per_unit) AS usd_per_unit, string_agg(DISTINCT via, ', ' ORDER BY via) AS via
    FROM (SELECT hour, split_part(symbol, '/', 1) AS currency, price AS usd_per_unit, symbol AS via
          FROM hour_prices WHERE {{ quote_of('symbol') }} IN {{ usd_at_par }}
          UNION ALL
          SELECT hour, {{ quote_of('symbol') }} AS currency, 1.0 / price AS usd_per_unit, symbol AS via
          FROM hour_prices WHERE split_part(symbol, '/', 1) IN {{ usd_at_par }})
    WHERE usd_per_unit > 0 AND currency NOT IN {{ usd_at_par }} GROUP BY ALL
), joined AS (
    SELECT coalesce(b.venue, c.venue) AS venue, coalesce(b.symbol, c.symbol) AS symbol,
           coalesce(b.market, c.market) AS market, {{ quote_of('coalesce(b.symbol, c.symbol)') }} AS quote,
           coalesce(b.hour, c.hour) AS hour,
           b.mid_mean, b.spread_bps_mean, b.spread_bps_p50, b.depth_quote_mean, coalesce(b.n_books, 0) AS n_books,
           c.volume_base, c.volume_quote, c.volatility_1m, c.candle_timeframe
    FROM books b FULL OUTER JOIN candles c USING (venue, symbol, hour)
), priced AS (
    -- quote currency per USD: USD stablecoins at par, TRY through USD/TRY (raw.fx), any other quote (or TRY
    -- without raw.fx) through a cross in the same data for that hour; else null, and usd_method says why
    -- volume from the candles, else from the public trades of the hour (a tape without candles); null with neither
    SELECT j.* EXCLUDE (volume_base, volume_quote), coalesce(t.trades, 0) AS trades,
           coalesce(j.volume_base, t.trade_volume_base) AS volume_base,
           coalesce(j.volume_quote, t.trade_volume_quote) AS volume_quote,
           CASE WHEN j.volume_base IS NOT NULL THEN 'candles'
                WHEN t.trade_volume_base IS NOT NULL THEN 'trades' END AS volume_source,
           CASE WHEN j.quote IN {{ usd_at_par }} THEN 1.0
                WHEN j.quote = 'TRY' AND fx.usd_try IS NOT NULL THEN fx.usd_try
                ELSE 1.0 / x.usd_per_unit END AS quote_per_usd,
           CASE WHEN j.quote IN {{ usd_at_par }} THEN 'par'
                WHEN j.quote = 'TRY' AND fx.usd_try IS NOT NULL THEN 'fx USD/TRY'
                WHEN x.usd_per_unit IS NOT NULL THEN 'cross ' || x.via
                WHEN j.quote = 'TRY' THEN 'no USD/TRY in raw.fx and no cross for TRY in the data'
                ELSE 'no cross for ' || j.quote || ' in the data' END AS usd_method
    FROM joined j
    LEFT JOIN trades t USING (venue, symbol, hour)
    LEFT JOIN fx USING (hour)
    LEFT JOIN usd_crosses x ON x.currency = j.quote AND x.hour = j.hour
)
SELECT venue, symbol, market, hour, mid_mean, spread_bps_mean, spread_bps_p50,
       depth_quote_mean / quote_per_usd AS depth_usd_mean,
       volume_base, volume_quote / quote_per_usd AS volume_usd, volume_source, quote_per_usd, usd_method,
       trades, volatility_1m, candle_timeframe, n_books
FROM priced
