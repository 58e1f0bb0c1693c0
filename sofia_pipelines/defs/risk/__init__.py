"""Risk (H): the backtest of the strategies' rules, the Monte Carlo risk run and the limits the runtime trades
within, scaled from it; a daily schedule runs them for the previous day."""
