"""Fill model (D): p(fill) for a limit order, fitted on the book and the trade tape."""
