"""``ftpipe serve``: an OpenAI-compatible server for a local model."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click


@click.command()
@click.argument("model", metavar="RUN|PATH", default="latest")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs an API key (--api-key-env).",
)
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free port).")
@click.option(
    "--store",
    type=click.Path(),
    help="Run store to find RUN in (default: FTPIPE_STORE, else the "
    "nearest .ftpipe/ walking up, else the repository root's).",
)
@click.option(
    "-p", "--pipeline", "pipeline_file", type=click.Path(), help="Use the store that runs of this pipeline use."
)
@click.option("--model-name", help="The model id clients send (default: the pipeline's name, else the folder's).")
@click.option(
    "--engine",
    type=click.Choice(["auto", "transformers", "vllm"]),
    default="auto",
    show_default=True,
    help="auto: vLLM when installed and a CUDA GPU is visible, else transformers.",
)
@click.option(
    "--api-key-env",
    default="FTPIPE_API_KEY",
    show_default=True,
    metavar="NAME",
    help="Environment variable holding the API key clients must send (unset: no key on loopback).",
)
@click.option(
    "--continuous-batching/--no-continuous-batching",
    default=True,
    show_default=True,
    help="transformers engine: batch concurrent greedy requests (paged attention).",
)
def serve(
    model: str,
    host: str,
    port: int,
    store: str | None,
    pipeline_file: str | None,
    model_name: str | None,
    engine: str,
    api_key_env: str,
    continuous_batching: bool,
) -> None:
    """Serve a model with an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    \b
    RUN|PATH: a folder written by `deploy: local`, any model folder, or a run id
    ('latest' by default) whose trained model is served; an adapter is served merged.
    \b
      ftpipe serve outputs/quickstart
      ftpipe serve latest -p pipelines/quickstart.yaml --port 8080
      FTPIPE_API_KEY=s3cret ftpipe serve latest --host 0.0.0.0
      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=unused python my_client.py
    """
    from ftpipe.engines import choose_engine
    from ftpipe.serve import find_model_folder, servable_folder
    from ftpipe.serving import api_key_for, quiet_libraries, vllm_command

    key = api_key_for(host, api_key_env)  # refuse before loading anything
    quiet_libraries()
    choice = choose_engine(engine)
    folder, name = find_model_folder(
        model, store=Path(store) if store else None, pipeline=Path(pipeline_file) if pipeline_file else None
    )
    name = model_name or name
    base_dir = Path(pipeline_file).resolve().parent if pipeline_file else None
    weights = servable_folder(folder, base_dir=base_dir, log=lambda m: click.echo(m, err=True))
    click.echo(f"loading {weights} on {choice.name} ({choice.reason}) ...", err=True)
    if choice.name == "vllm":
        env = dict(os.environ)
        if key:
            env["VLLM_API_KEY"] = key
        click.echo(f"serving model '{name}' at http://{host}:{port}/v1 (vLLM; Ctrl+C stops)", err=True)
        raise SystemExit(subprocess.call(vllm_command(weights, name, host, port), env=env))

    try:
        from ftpipe.serving.app import Engine, ServeOptions, bind, build_app, run
    except ImportError as exc:
        from ftpipe.errors import MissingDependency

        raise MissingDependency(exc.name or "fastapi", "serve", "ftpipe serve") from None

    loaded = Engine(weights, ServeOptions(continuous_batching=continuous_batching))
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    auth = f", API key from ${api_key_env}" if key else ""
    click.echo(
        f"serving model '{name}' at http://{bound_host}:{bound_port}/v1 (transformers"
        f"{', continuous batching' if continuous_batching else ''}{auth}; Ctrl+C stops)",
        err=True,
    )
    try:
        run(build_app(loaded, name, api_key=key), sock)
    except KeyboardInterrupt:
        pass
    finally:
        loaded.shutdown()
        click.echo("stopped", err=True)
