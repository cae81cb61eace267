"""Fluxloom: a node-graph studio for FLUX image models.

Composition root and command line (its flags: cli_args.py). `python main.py` serves the UI;
`python main.py run WORKFLOW` runs a workflow headless; `python main.py demo-models` writes small
random-weight checkpoints.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli_args import parse_args, settings_from_args
from executor.heap import settle_heap
from settings import Settings

log = logging.getLogger("fluxloom")


@dataclass
class App:
    settings: Settings
    registry: Any
    services: Any
    executor: Any
    packs: Any = None  # nodes.runtime.custom_loader.PackReport


def build_memory_manager(settings: Settings) -> Any:
    """The compute device (CUDA when present); budget: its free memory minus the reserve, capped by --vram-limit."""
    from models.memory import MemoryManager, default_device

    budget = None if settings.vram_limit_gb is None else int(settings.vram_limit_gb * (1 << 30))
    return MemoryManager(
        default_device(), budget_bytes=budget, reserve_bytes=int(settings.reserve_vram_bytes)
    )


def build_app(settings: Settings, *, load_packs: bool = True) -> App:
    """Wire the engine: built-in nodes + custom packs, services for nodes, executor with torch hooks."""
    from executor.cache import OutputCache
    from executor.run import Executor
    from nodes.runtime.custom_loader import load_custom_nodes, with_pack_folders
    from nodes.runtime.hooks import TorchNodeHooks, outputs_bytes
    from nodes.runtime.model_paths import ModelPaths
    from nodes.runtime.registry import build_registry
    from nodes.runtime.services import NodeServices

    registry = build_registry()
    model_paths = ModelPaths.from_models_dir(settings.models_dir, settings.extra_model_paths)
    services = NodeServices(settings=settings, model_paths=model_paths, memory=build_memory_manager(settings))
    packs = None
    if load_packs:  # our folder, `custom_nodes` folders of extra_model_paths.yaml, then pip-installed packs
        folders = [settings.custom_nodes_dir, *model_paths.folders.get("custom_nodes", ())]
        packs = load_custom_nodes(folders, registry, entry_points=True, services=services)
        services = with_pack_folders(services)  # folders packs added (folder_paths) serve our nodes too
    cache = OutputCache(max_bytes=settings.cache_bytes, sizeof=outputs_bytes)
    executor = Executor(registry, cache=cache, hooks=TorchNodeHooks(), services=services)
    return App(settings, registry, services, executor, packs)


def read_workflow(
    path: Path, registry: Any = None, services: Any = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(API prompt, UI workflow or None) from a workflow file: API JSON, UI JSON or a PNG with chunks.

    The API prompt of a UI file is converted; a PNG's embedded API `prompt` is preferred (it is what
    ran), else its UI `workflow` is converted. The UI workflow is what saved images embed again.
    Unknown node types in a UI workflow stop the run with an error naming them.
    """
    from executor.errors import PromptValidationError
    from executor.workflow import is_ui_workflow, to_api_prompt
    from nodes.runtime.png_workflow import PngWorkflowError, is_png, read_png_workflow

    if not path.is_file():
        raise SystemExit(f"error: workflow file not found: {path}")
    ui: dict[str, Any] | None = None
    if is_png(path):
        try:
            embedded = read_png_workflow(path)
            data: Any = embedded.best()
        except PngWorkflowError as exc:
            raise SystemExit(f"error: {path}: {exc}") from None
        ui = embedded.workflow
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SystemExit(f"error: {path} is not a JSON workflow or a PNG: {exc}") from None
        ui = data if is_ui_workflow(data) else None
    if registry is None:
        from nodes.runtime.registry import build_registry

        registry = build_registry()
    try:
        return to_api_prompt(data, registry, services), ui
    except PromptValidationError as exc:
        raise SystemExit("\n".join(f"error: {path}: {line}" for line in exc.lines())) from None


def load_workflow(path: Path, registry: Any = None, services: Any = None) -> dict[str, Any]:
    """The API prompt of a workflow file (see read_workflow)."""
    return read_workflow(path, registry, services)[0]


def command_run(settings: Settings, workflow: Path) -> int:
    """Run a workflow headless; under torchrun as one rank of a data-parallel run (cli_distributed)."""
    from cli_distributed import data_parallel

    with data_parallel(settings) as (rank, rank_settings):
        return _run_workflow(rank_settings, workflow, quiet=rank != 0)


def _run_workflow(settings: Settings, workflow: Path, *, quiet: bool) -> int:
    """quiet: print errors only, no progress, warnings or saved files (data-parallel ranks other than 0)."""
    from cli_progress import ProgressBars, saved_files
    from executor.errors import Interrupted, NodeExecutionError, PromptValidationError

    app = build_app(settings)
    settle_heap()
    prompt, ui_workflow = read_workflow(workflow, app.registry, app.services)
    try:
        validated = app.executor.validate(prompt)
    except PromptValidationError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    for line in (
        PromptValidationError({"message": "skipped"}, validated.node_errors).lines()
        if validated.node_errors and not quiet
        else ()
    ):
        print(f"warning: {line}", file=sys.stderr)
    with ProgressBars() as bars:
        try:
            result = app.executor.execute(
                validated,
                prompt,
                prompt_id=str(uuid.uuid4()),
                sink=None if quiet else bars,
                extra_data={"extra_pnginfo": {"workflow": ui_workflow} if ui_workflow else {}},
            )
        except NodeExecutionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Interrupted:
            print("interrupted", file=sys.stderr)
            return 130
    memory = app.services.memory
    if memory is not None:
        budget = memory.budget()
        log.info(
            "device memory: peak %d bytes of models resident (budget %s), %d bytes moved in",
            memory.stats.peak_bytes,
            "unlimited" if budget is None else f"{budget} bytes",
            memory.stats.bytes_moved,
        )
    if not quiet:
        for path in saved_files(result.outputs, settings):
            print(path)
    return 0


def startup_banner(settings: Settings) -> list[str]:
    """What `serve` prints: where it listens and how to open it, and a loud warning when the network
    can reach it without a token."""
    from web.security import WILDCARD_ADDRESSES, exposure_warning, listens_beyond_loopback

    def url(host: str) -> str:
        host = f"[{host}]" if ":" in host else host
        token = f"/?token={settings.auth_token}" if settings.auth_token else ""
        return f"http://{host}:{settings.port}{token}"

    if not listens_beyond_loopback(settings):
        lines = [f"Fluxloom is serving {url(settings.listen)} (this machine only; Ctrl+C stops it)"]
    elif settings.listen in WILDCARD_ADDRESSES:
        lines = [
            f"Fluxloom is listening on every network interface, port {settings.port} (Ctrl+C stops it):",
            f"  this machine: {url('127.0.0.1')}",
            f"  other machines: {url('<this machine IP or name>')}",
        ]
    else:
        lines = [
            f"Fluxloom is listening on {url(settings.listen)} (reachable from the network; Ctrl+C stops it)"
        ]
    warning = exposure_warning(settings)
    if warning:
        bar = "!" * 100
        lines += [bar, warning, bar]
    return lines


def command_packs(settings: Settings) -> int:
    """Load the packs as the server would and print what loaded and what failed (exit 1 if any failed)."""
    from nodes.runtime.custom_loader import describe_report

    app = build_app(settings)
    report = app.packs
    if report is None or not report.packs:
        print(f"no node packs found (folder {settings.custom_nodes_dir}; pip entry points none)")
        return 0
    for line in describe_report(report):
        print(line)
    for pack in report.packs:
        if not pack.error:
            print(f"{pack.name}: {', '.join(pack.nodes) or '(no nodes)'}")
    loaded = len(report.packs) - len(report.failed)
    print(f"{loaded} loaded, {len(report.failed)} failed")
    return 1 if report.failed else 0


def command_serve(settings: Settings) -> int:
    """Serve the web UI and the ComfyUI-compatible API until Ctrl+C; queued prompts survive restarts."""
    from aiohttp import web

    from executor.queue import PromptQueue
    from web.app import create_app
    from web.services import WebServices

    app = build_app(settings)
    model_paths = app.services.model_paths
    memory = getattr(app.services, "memory", None)

    def device_stats() -> list[dict[str, Any]]:
        """ComfyUI's /system_stats `devices`: the compute device (on the CPU, system memory)."""
        from models.memory import default_device

        return [(memory.compute if memory is not None else default_device()).stats()]

    queue = PromptQueue.in_user_dir(settings.user_dir)

    def attach_packs(web_app: Any, send_json: Any, send_bytes: Any, current_client: Any) -> None:
        """Give the packs' PromptServer the real app and sockets (before the app starts)."""
        from nodes.compat.server import PromptServer
        from nodes.runtime.channel import CHANNEL

        CHANNEL.connect(send_json, send_bytes, current_client)
        PromptServer.instance.attach(web_app)

    def on_prompt(body: dict[str, Any]) -> dict[str, Any]:
        """The packs' handlers of a POST /prompt body (ComfyUI's trigger_on_prompt)."""
        from nodes.compat.server import PromptServer

        return PromptServer.instance.trigger_on_prompt(body)

    services = WebServices(
        settings=settings,
        registry=app.registry,
        executor=app.executor,
        queue=queue,
        node_services=app.services,
        model_paths=model_paths,
        web_directories=app.packs.web_directories if app.packs is not None else {},
        free_models=memory.free_all if memory is not None else None,
        device_stats=device_stats,
        argv=tuple(sys.argv),
        packs=tuple(app.packs.as_dicts()) if app.packs is not None else (),
        attach_packs=attach_packs,
        on_prompt=on_prompt,
    )
    # The worker thread is CPU-bound between GPU calls; with the default 5 ms GIL switch interval every
    # syscall of a request handler can wait that long for the GIL. 1 ms keeps p99 API latency low.
    sys.setswitchinterval(0.001)
    settle_heap()  # everything built so far lives as long as the process
    for line in startup_banner(settings):
        print(line, flush=True)
    try:
        web.run_app(
            create_app(services), host=settings.listen, port=settings.port, print=None, access_log=None
        )
    finally:
        queue.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = settings_from_args(args)
    command = args.command or "serve"
    if command == "run":
        from cli_distributed import launch, under_torchrun

        if args.nproc > 1 and not under_torchrun():
            return launch(sys.argv[1:] if argv is None else argv, args.nproc)
        return command_run(settings, args.workflow)
    if command == "demo-models":
        from models.tiny import write_demo_models

        for path in write_demo_models(settings.models_dir):
            print(path)
        return 0
    if command == "packs":
        return command_packs(settings)
    if command == "fetch-tokenizers":
        from models.text.tokenizers import fetch_tokenizers

        for path in fetch_tokenizers(settings.models_dir):
            print(path)
        return 0
    return command_serve(settings)


if __name__ == "__main__":
    sys.exit(main())
