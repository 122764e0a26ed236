"""`python -m gtasr_stream` = `gtasr-stream`."""

from .cli import main

main(prog_name="gtasr-stream")
