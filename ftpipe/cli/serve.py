"""``ftpipe serve``: an OpenAI-compatible server for a local model."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("model", metavar="RUN|PATH", default="latest")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--store", type=click.Path(), help="Run store to find RUN in (default: FTPIPE_STORE, else the "
              "nearest .ftpipe/ walking up, else the repository root's).")
@click.option("-p", "--pipeline", "pipeline_file", type=click.Path(), help="Use the store that runs of this pipeline use.")
@click.option("--model-name", help="The model id clients send (default: the folder's name, or <pipeline>-<run>).")
def serve(model: str, host: str, port: int, store: str | None, pipeline_file: str | None,
          model_name: str | None) -> None:
    """Serve a model with an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    \b
    RUN|PATH: a folder written by `deploy: local`, any model folder, or a run id
    ('latest' by default) whose trained model is served.
    \b
      ftpipe serve outputs/quickstart
      ftpipe serve latest -p pipelines/quickstart.yaml --port 8080
      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=unused python my_client.py
    """
    from ftpipe.serve import find_model_folder, load_model, make_server

    folder, name = find_model_folder(model, store=Path(store) if store else None,
                                     pipeline=Path(pipeline_file) if pipeline_file else None)
    click.echo(f"loading {folder} ...", err=True)
    base_dir = Path(pipeline_file).resolve().parent if pipeline_file else None
    lm = load_model(folder, model_name or name, base_dir=base_dir)
    server = make_server(lm, host, port)
    bound_host, bound_port = server.server_address[:2]
    if isinstance(bound_host, bytes):
        bound_host = bound_host.decode()
    click.echo(f"serving model '{lm.name}' at http://{bound_host}:{bound_port}/v1 (Ctrl+C stops)", err=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()
