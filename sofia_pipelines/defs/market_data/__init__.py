"""Raw market data: the sources (simulator, files, ccxt), the raw assets and their checks."""
