"""Data files shipped with netspec: the 8x8 digits (digits.npz; README.md gives the source)."""
