"""`python -m training` = `gtasr-train`."""

from .cli import main

main(prog_name="gtasr-train")
