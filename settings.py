"""Settings: built once in main.py from the command line; library code receives it, never reads argv/env."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    base_dir: Path = Path(".")
    models_dir: Path = Path("weights")
    input_dir: Path = Path("input")
    output_dir: Path = Path("output")
    temp_dir: Path = Path("temp")
    user_dir: Path = Path("user")
    custom_nodes_dir: Path = Path("custom_nodes")
    extra_model_paths: tuple[Path, ...] = ()
    listen: str = "127.0.0.1"
    port: int = 8188
    auth_token: str | None = None
    # Host names (besides loopback names, IP literals and this machine's name) a network-facing
    # server answers to; anything else is refused as a possible DNS-rebinding attack.
    allowed_hosts: tuple[str, ...] = ()
    request_body_timeout_s: float = 60.0  # a request body that sends nothing for this long gets 408
    max_upload_size_mb: float = 100.0
    vram_limit_gb: float | None = None  # cap on the model budget; None: free VRAM minus the reserve
    reserve_vram_gb: float | None = None  # VRAM left to others; None: 0.4 GB (0.6 GB on Windows), as ComfyUI
    cache_bytes: int = 4 << 30  # budget for cached node outputs held between prompts
    preview_max_size: int = 512
    disable_metadata: bool = False  # saved PNGs carry no prompt/workflow chunks (ComfyUI's flag)
    # Set on the ranks other than 0 of a data-parallel run (torchrun): what their nodes save goes
    # here (a folder deleted at exit), so only rank 0's files reach output/ and temp/.
    scratch_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_upload_size_mb <= 0:
            raise ValueError(f"max upload size must be positive, got {self.max_upload_size_mb} MB")
        if not self.request_body_timeout_s > 0:
            raise ValueError(f"request body timeout must be positive, got {self.request_body_timeout_s} s")

    @property
    def reserve_vram_bytes(self) -> int:
        """VRAM the memory manager leaves free (ComfyUI's --reserve-vram and its platform default)."""
        if self.reserve_vram_gb is not None:
            return int(self.reserve_vram_gb * (1 << 30))
        return int((0.6 if sys.platform == "win32" else 0.4) * (1 << 30))
