"""The Typer command line: each module parses one command and calls one library function."""
