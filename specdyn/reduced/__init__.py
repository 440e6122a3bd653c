"""Reduced dynamics (ODEs and maps on a few coordinates), solved with diffrax."""
