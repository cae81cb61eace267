"""Model folders: listing, extra_model_paths.yaml, path safety."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodes.runtime.model_paths import ExtraPathsConfigError, ModelNotFound, ModelPaths, UnsafeModelPath


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_lists_recursive_sorted_filtered_and_both_legacy_folders(tmp_path):
    root = tmp_path / "models"
    touch(root / "diffusion_models" / "b.safetensors")
    touch(root / "diffusion_models" / "sub" / "deep" / "a.sft")
    touch(root / "unet" / "legacy.ckpt")
    touch(root / "unet" / "notes.txt")
    touch(root / "diffusion_models" / ".hidden.safetensors")
    touch(root / "text_encoders" / "t5.bin")
    touch(root / "clip" / "clip_l.pth")
    paths = ModelPaths.from_models_dir(root)
    assert paths.list_models("diffusion_models") == ["b.safetensors", "legacy.ckpt", "sub/deep/a.sft"]
    assert paths.list_models("unet") == paths.list_models("diffusion_models")
    assert paths.list_models("clip") == ["clip_l.pth", "t5.bin"]
    assert paths.list_models("vae") == []  # folder does not exist
    assert paths.resolve("unet", "legacy.ckpt") == root / "unet" / "legacy.ckpt"
    assert paths.resolve("diffusion_models", "sub/deep/a.sft") == root / "diffusion_models" / "sub/deep/a.sft"
    assert paths.resolve("diffusion_models", "sub\\deep\\a.sft").name == "a.sft"  # Windows-style name


def test_diffusers_folders_are_one_entry(tmp_path):
    root = tmp_path / "models"
    pipe = root / "diffusers" / "FLUX.1-tiny"
    touch(pipe / "model_index.json", b"{}")
    touch(pipe / "transformer" / "diffusion_pytorch_model.safetensors")
    comp = root / "diffusion_models" / "flux-transformer"
    touch(comp / "config.json", b"{}")
    touch(comp / "diffusion_pytorch_model-00001-of-00002.safetensors")
    touch(comp / "diffusion_pytorch_model.safetensors.index.json", b"{}")
    touch(root / "checkpoints" / "flux1-schnell.safetensors")
    paths = ModelPaths.from_models_dir(root)
    assert paths.list_models("diffusers") == ["FLUX.1-tiny"]
    assert paths.list_models("diffusion_models") == ["flux-transformer"]
    assert paths.list_models("checkpoints") == ["FLUX.1-tiny", "flux1-schnell.safetensors"]
    assert paths.resolve("checkpoints", "FLUX.1-tiny") == pipe
    assert paths.list_models("loras") == []


@pytest.mark.parametrize(
    "name",
    [
        "../secret.safetensors",
        "a/../../x.safetensors",
        "/etc/passwd",
        "C:\\x.safetensors",
        "",
        "a//b.safetensors",
        "./a.safetensors",
        "a\x00b",
    ],
)
def test_names_may_not_escape(tmp_path, name):
    touch(tmp_path / "secret.safetensors")
    paths = ModelPaths.from_models_dir(tmp_path / "models")
    touch(tmp_path / "models" / "vae" / "a.safetensors")
    with pytest.raises(UnsafeModelPath):
        paths.resolve("vae", name)


def test_symlinks_in_a_model_folder_may_point_anywhere(tmp_path):
    # Models are only read: users keep them on other disks and link them in, as with ComfyUI.
    outside = touch(tmp_path / "elsewhere" / "big.safetensors")
    touch(tmp_path / "elsewhere" / "dir" / "also.safetensors")
    vae = tmp_path / "models" / "vae"
    inside = touch(vae / "real" / "ae.safetensors")
    os.symlink(outside, vae / "linked.safetensors")
    os.symlink(tmp_path / "elsewhere" / "dir", vae / "linkdir")
    os.symlink(inside, vae / "alias.safetensors")
    os.symlink(vae, vae / "real" / "loop")  # a loop must not hang the listing
    os.symlink(tmp_path / "elsewhere", tmp_path / "elsewhere" / "dir" / "up")  # nor a loop outside
    paths = ModelPaths.from_models_dir(tmp_path / "models")
    assert paths.list_models("vae") == [
        "alias.safetensors",
        "linkdir/also.safetensors",
        "linkdir/up/big.safetensors",
        "linked.safetensors",
        "real/ae.safetensors",
    ]
    assert paths.resolve("vae", "linked.safetensors") == vae / "linked.safetensors"
    assert paths.resolve("vae", "linkdir/also.safetensors").read_bytes() == b"x"
    with pytest.raises(UnsafeModelPath):  # names still cannot climb out
        paths.resolve("vae", "../../elsewhere/big.safetensors")
    with pytest.raises(ModelNotFound) as missing:  # errors name folders, not absolute paths
        paths.resolve("vae", "nope.safetensors")
    assert str(tmp_path) not in str(missing.value)


def test_missing_name_names_the_searched_folders(tmp_path):
    paths = ModelPaths.from_models_dir(tmp_path)
    with pytest.raises(ModelNotFound, match="diffusion_models.*nope.safetensors.*unet"):
        paths.resolve("unet", "nope.safetensors")


def test_extra_model_paths_yaml(tmp_path, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    touch(comfy / "models" / "checkpoints" / "extra.safetensors")
    touch(comfy / "models" / "unet" / "u1.safetensors")
    touch(comfy / "models" / "diffusion_models" / "u2.safetensors")
    touch(tmp_path / "mine" / "clip_l.safetensors")
    touch(tmp_path / "home" / "loras" / "style.safetensors")
    local = tmp_path / "models"
    touch(local / "checkpoints" / "local.safetensors")
    monkeypatch.setenv("MY_LORAS", str(tmp_path / "home" / "loras"))
    config = tmp_path / "conf" / "extra_model_paths.yaml"
    touch(
        config,
        (
            b"comfyui:\n"
            b"    base_path: ../ComfyUI/\n"
            b"    is_default: true\n"
            b"    checkpoints: models/checkpoints/\n"
            b"    diffusion_models: |\n"
            b"                  models/diffusion_models\n"
            b"                  models/unet\n"
            b"other:\n"
            b"    clip: ../mine\n"
            b"    loras: $MY_LORAS\n"
            b"empty:\n"
        ),
    )
    paths = ModelPaths.from_models_dir(local, [config])
    assert paths.folders_for("checkpoints")[0] == tmp_path / "conf" / "../ComfyUI" / "models/checkpoints"
    assert paths.list_models("checkpoints") == ["extra.safetensors", "local.safetensors"]
    assert paths.list_models("diffusion_models") == ["u1.safetensors", "u2.safetensors"]
    assert paths.list_models("text_encoders") == ["clip_l.safetensors"]  # "clip" key, relative to the yaml
    assert paths.list_models("loras") == ["style.safetensors"]
    assert paths.resolve("loras", "style.safetensors").is_file()
    assert ModelPaths.from_models_dir(local).list_models("checkpoints") == ["local.safetensors"]  # immutable


@pytest.mark.parametrize("text", ["a: [unclosed", "- a\n- b\n", "s:\n  loras: [1, 2]\n", "s: 3\n"])
def test_bad_extra_config_is_a_typed_error(tmp_path, text):
    config = touch(tmp_path / "extra.yaml", text.encode())
    with pytest.raises(ExtraPathsConfigError, match="extra.yaml"):
        ModelPaths.from_models_dir(tmp_path).with_extra_config(config)
