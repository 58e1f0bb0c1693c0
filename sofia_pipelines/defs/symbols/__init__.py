"""Symbols (E): symbol rankings and the session schedule."""
