"""Command-line interface (typer). One module per command; no algorithms here."""
