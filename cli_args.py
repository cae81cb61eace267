"""The command line of `main.py`: its commands, their flags, and the `Settings` built from them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from settings import Settings

DESCRIPTION = "Fluxloom: a node-graph studio for FLUX image models."
COMMANDS = ("serve", "run", "demo-models", "fetch-tokenizers", "packs")


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    folders = common.add_argument_group("folders")
    folders.add_argument(
        "--models-dir",
        type=Path,
        default=Path("weights"),
        help="models root with ComfyUI's subfolders (checkpoints, diffusion_models, vae, ...)",
    )
    folders.add_argument(
        "--extra-model-paths-config",
        type=Path,
        action="append",
        default=[],
        help="ComfyUI extra_model_paths.yaml to search too (repeatable)",
    )
    folders.add_argument("--input-dir", type=Path, default=Path("input"), help="images that nodes load")
    folders.add_argument("--output-dir", type=Path, default=Path("output"), help="where images are saved")
    folders.add_argument("--temp-dir", type=Path, default=Path("temp"), help="previews")
    folders.add_argument(
        "--user-dir",
        type=Path,
        default=Path("user"),
        help="settings, saved workflows and the persisted queue",
    )
    folders.add_argument(
        "--custom-nodes-dir", type=Path, default=Path("custom_nodes"), help="third-party node packs"
    )
    engine = common.add_argument_group("engine")
    engine.add_argument(
        "--vram-limit",
        type=float,
        default=None,
        metavar="GB",
        help="cap on the VRAM budget for models; the rest is streamed from CPU memory "
        "(default: the device's free memory minus --reserve-vram)",
    )
    engine.add_argument(
        "--reserve-vram",
        type=float,
        default=None,
        metavar="GB",
        help="VRAM left free for other programs and the OS (default 0.4, 0.6 on Windows)",
    )
    engine.add_argument("--cache-gb", type=float, default=4.0, help="memory budget for cached node outputs")
    engine.add_argument(
        "--disable-metadata",
        action="store_true",
        help="save images without the prompt and workflow embedded in their PNG chunks",
    )
    engine.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


class _FullHelpParser(argparse.ArgumentParser):
    """`main.py --help` documents every command and every flag, not just the command names."""

    def format_help(self) -> str:
        text = super().format_help()
        for action in self._subparsers._group_actions if self._subparsers else ():
            for name, sub in action.choices.items():
                text += f"\n{'=' * 8} {name} {'=' * 8}\n" + sub.format_help()
        return text


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _FullHelpParser(prog="main.py", description=DESCRIPTION, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        parents=[common],
        formatter_class=fmt,
        help="serve the web UI and the ComfyUI-compatible API (default)",
    )
    serve.add_argument(
        "--listen", default="127.0.0.1", help="address to bind; 0.0.0.0 opens it to the network"
    )
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--auth-token", default=None, help="require this bearer token on every request")
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the server answers to besides loopback names, IP literals and this "
        "machine's name, when listening beyond loopback (repeatable; others get 403)",
    )
    serve.add_argument("--max-upload-size", type=float, default=100.0, metavar="MB", help="upload size limit")

    run = sub.add_parser(
        "run",
        parents=[common],
        formatter_class=fmt,
        help="run a workflow file headless and print the files it saved",
    )
    run.add_argument("workflow", type=Path, help="API JSON, UI JSON, or a PNG with an embedded workflow")
    run.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="run in N processes under torchrun, one per GPU (gloo on the CPU): data-parallel "
        "training, batch_size per process; only the first process saves files",
    )

    sub.add_parser(
        "demo-models",
        parents=[common],
        formatter_class=fmt,
        help="write small random-weight checkpoints in every supported layout",
    )
    sub.add_parser(
        "packs",
        parents=[common],
        formatter_class=fmt,
        help="load the custom node packs and list which loaded (with their nodes) and which failed",
    )
    sub.add_parser(
        "fetch-tokenizers",
        parents=[common],
        formatter_class=fmt,
        help="download the CLIP-L and T5 tokenizer files (needs internet)",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in COMMANDS for a in argv) and not {"-h", "--help"} & set(argv):
        argv.insert(0, "serve")  # `python main.py [flags]` serves
    return build_parser().parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        models_dir=args.models_dir,
        input_dir=args.input_dir,
        output_dir=args.output_dir,
        temp_dir=args.temp_dir,
        user_dir=args.user_dir,
        custom_nodes_dir=args.custom_nodes_dir,
        extra_model_paths=tuple(args.extra_model_paths_config),
        listen=getattr(args, "listen", "127.0.0.1"),
        port=getattr(args, "port", 8188),
        auth_token=getattr(args, "auth_token", None),
        max_upload_size_mb=getattr(args, "max_upload_size", 100.0),
        allowed_hosts=tuple(getattr(args, "allow_host", ())),
        vram_limit_gb=args.vram_limit,
        reserve_vram_gb=args.reserve_vram,
        cache_bytes=int(args.cache_gb * (1 << 30)),
        disable_metadata=args.disable_metadata,
    )
