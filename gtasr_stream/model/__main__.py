"""`python -m gtasr_stream.model`: print every preset's parameters and compute (see network.py)."""

from .network import main

main()
