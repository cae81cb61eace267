"""`python main.py packs`: what loaded (with nodes), what failed and why; exit 1 when a pack failed."""

from __future__ import annotations

import main
from tests.pack_server import PACKS


def test_packs_command_lists_loaded_and_failed(tmp_path, capsys):
    code = main.main(
        [
            "packs",
            "--custom-nodes-dir",
            str(PACKS),
            "--models-dir",
            str(tmp_path / "models"),
            "--output-dir",
            str(tmp_path / "out"),
            "--input-dir",
            str(tmp_path / "in"),
            "--temp-dir",
            str(tmp_path / "temp"),
            "--user-dir",
            str(tmp_path / "user"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    broken = next(line for line in lines if "fl_broken_pack" in line)
    assert "FAILED: MissingComfyFeature" in broken and "comfy.model_base.Flux" in broken
    assert any(line.strip().endswith("fl_v3_pack: 2 nodes") for line in lines)
    assert "fl_v3_pack: FL_InvertV3, FL_LabelV3" in lines
    assert any("comfyui_tooling_nodes (pip): 5 nodes" in line for line in lines)  # pip-installed pack
    assert lines[-1].endswith(" loaded, 1 failed") and int(lines[-1].split()[0]) >= 5


def test_packs_command_with_an_empty_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nodes.runtime.custom_loader.ENTRY_POINT_GROUPS", ())
    code = main.main(
        ["packs", "--custom-nodes-dir", str(tmp_path / "none"), "--models-dir", str(tmp_path / "m")]
    )
    assert code == 0 and "no node packs found" in capsys.readouterr().out
