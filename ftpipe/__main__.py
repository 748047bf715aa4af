from ftpipe.cli import run_cli

run_cli()
