"""Checkpoint formats: header inspection, typed errors, lazy meta-device loading, fp8 storage."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from models import formats
from models.formats.errors import CheckpointFormatError, UnsupportedFormatError, WrongFamilyError
from models.formats.fp8 import CastLinear
from models.formats.header import inspect_file, inspect_weights
from models.formats.lazy import Source, load_module


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 16)
        self.lin = nn.Linear(16, 32)
        self.norm = nn.LayerNorm(32)
        self.out = nn.Linear(32, 8, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.lin(self.emb(ids))))


def toy(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy().eval()


def save(module: nn.Module, path, dtype=None, *, prefix: str = "", extra=None, metadata=None):
    sd = {
        prefix + k: (v.to(dtype) if dtype is not None else v).contiguous()
        for k, v in module.state_dict().items()
    }
    sd.update(extra or {})
    save_file(sd, str(path), metadata=metadata)
    return path


IDS = torch.tensor([[1, 2, 3, 10]])


# --- headers -------------------------------------------------------------------------------------


def test_inspect_reads_shapes_dtypes_metadata_without_tensors(tmp_path):
    path = save(toy(), tmp_path / "t.safetensors", torch.bfloat16, metadata={"modelspec.title": "toy"})
    info = inspect_file(path)
    assert info.shapes == {
        "emb.weight": (11, 16),
        "lin.weight": (32, 16),
        "lin.bias": (32,),
        "norm.weight": (32,),
        "norm.bias": (32,),
        "out.weight": (8, 32),
    }
    assert {t.dtype for t in info.tensors.values()} == {"BF16"}
    assert info.metadata == {"modelspec.title": "toy"}
    assert info.data_bytes == sum(v.numel() * 2 for v in toy().state_dict().values())
    assert info.file_bytes == path.stat().st_size


def test_truncated_file_names_file_and_tensor(tmp_path):
    path = save(toy(), tmp_path / "cut.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(
        CheckpointFormatError, match=r"cut\.safetensors.*truncated.*'out\.weight'|cut\.safetensors.*truncated"
    ):
        inspect_file(path)
    path.write_bytes(data[:20])
    with pytest.raises(CheckpointFormatError, match=r"cut\.safetensors: header length"):
        inspect_file(path)
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointFormatError, match="8-byte header"):
        inspect_file(path)


def test_corrupt_header_and_bad_entries(tmp_path):
    path = tmp_path / "bad.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'  # missing brace
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(CheckpointFormatError, match="bad.safetensors: header is not valid JSON"):
        inspect_file(path)
    header = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(CheckpointFormatError, match="needs 12 bytes"):
        inspect_file(path)
    header = json.dumps({"a": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0")
    with pytest.raises(UnsupportedFormatError, match="dtype F4"):
        inspect_file(path)


def test_pickles_and_gguf_are_refused(tmp_path):
    ckpt = tmp_path / "old.ckpt"
    torch.save({"a": torch.zeros(2)}, ckpt)
    with pytest.raises(UnsupportedFormatError, match="old.ckpt.*pickled"):
        inspect_file(ckpt)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 32)
    with pytest.raises(UnsupportedFormatError, match="GGUF"):
        inspect_file(gguf)
    with pytest.raises(CheckpointFormatError, match="not found"):
        inspect_file(tmp_path / "missing.safetensors")


def test_sharded_index_merges_and_checks(tmp_path):
    sd = {k: v.contiguous() for k, v in toy().state_dict().items()}
    a = {k: v for k, v in sd.items() if k.startswith(("emb", "lin"))}
    b = {k: v for k, v in sd.items() if k not in a}
    save_file(a, str(tmp_path / "m-00001-of-00002.safetensors"))
    save_file(b, str(tmp_path / "m-00002-of-00002.safetensors"))
    weight_map = {k: "m-00001-of-00002.safetensors" for k in a} | {
        k: "m-00002-of-00002.safetensors" for k in b
    }
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    info = inspect_weights(tmp_path)
    assert set(info) == set(sd) and len(info.files) == 2
    assert info.file_of("norm.bias").path.name == "m-00002-of-00002.safetensors"
    weight_map["ghost.weight"] = "m-00002-of-00002.safetensors"
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointFormatError, match="index.json.*missing from the shards"):
        inspect_weights(tmp_path)
    weight_map.pop("ghost.weight")
    weight_map["lin.bias"] = "../escape.safetensors"
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointFormatError, match="leaves the folder"):
        inspect_weights(tmp_path)


# --- lazy loading -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lazy_load_matches_source_module(tmp_path, dtype):
    ref = toy()
    path = save(ref, tmp_path / "t.safetensors", dtype, prefix="model.")
    module = load_module(Toy, Source(inspect_weights(path), prefix="model."))
    assert all(not t.is_meta and t.dtype == dtype for t in module.state_dict().values())
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(module.state_dict()[key], value.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(module(IDS), ref.to(dtype)(IDS), rtol=0, atol=0)


def test_cast_on_load_to_compute_dtype(tmp_path):
    ref = toy()
    path = save(ref, tmp_path / "t.safetensors", torch.bfloat16)
    module = load_module(Toy, Source(inspect_weights(path)), compute_dtype=torch.float32)
    assert {t.dtype for t in module.state_dict().values()} == {torch.float32}
    torch.testing.assert_close(module(IDS), ref(IDS), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_file_stays_fp8_and_computes_close_to_fp32(tmp_path, fp8):
    ref = toy()
    sd = {k: v.to(fp8) if k.endswith("weight") else v for k, v in ref.state_dict().items()}  # norms fp8 too
    save_file(sd, str(tmp_path / "f8.safetensors"))
    module = load_module(
        Toy, Source(inspect_weights(tmp_path / "f8.safetensors")), compute_dtype=torch.float32
    )
    assert module.lin.weight.dtype == fp8 and module.out.weight.dtype == fp8
    assert isinstance(module.lin, CastLinear) and module.lin.weight.dtype == fp8
    assert module.norm.weight.dtype == torch.float32 and module.emb.weight.dtype == torch.float32  # upcast
    # oracle: the same fp8-rounded weights dequantized in float64
    oracle = toy().double()
    oracle.load_state_dict({k: v.double() for k, v in sd.items()})
    out = module(IDS)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), oracle(IDS), rtol=1e-4, atol=1e-4)
    # and close to the unquantized fp32 model (fp8 rounding error only)
    err = (out - ref(IDS)).abs().max() / ref(IDS).abs().max()
    assert err < (0.15 if fp8 == torch.float8_e5m2 else 0.08)
    assert module.state_dict().keys() == ref.state_dict().keys()


def test_weight_dtype_choice_casts_only_linear_weights(tmp_path):
    path = save(toy(), tmp_path / "t.safetensors", torch.bfloat16)
    module = load_module(Toy, Source(inspect_weights(path)), linear_dtype=torch.float8_e4m3fn)
    assert module.lin.weight.dtype == torch.float8_e4m3fn and module.out.weight.dtype == torch.float8_e4m3fn
    assert module.lin.bias.dtype == torch.bfloat16 and module.emb.weight.dtype == torch.bfloat16
    assert module(IDS).dtype == torch.bfloat16


def test_scaled_fp8_dequantizes_with_scale_weight(tmp_path):
    ref = toy()
    sd = dict(ref.state_dict())
    extra = {"scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    for name in ("lin", "out"):
        w = sd[f"{name}.weight"]
        scale = w.abs().max() / 448.0
        sd[f"{name}.weight"] = (w / scale).to(torch.float8_e4m3fn)
        extra[f"{name}.scale_weight"] = scale.reshape(1)
    save_file({**sd, **extra}, str(tmp_path / "s.safetensors"))
    module = load_module(
        Toy, Source(inspect_weights(tmp_path / "s.safetensors")), compute_dtype=torch.float32
    )
    assert module.lin.weight.dtype == torch.float8_e4m3fn and module.lin.scale_weight is not None
    assert "lin.scale_weight" not in module.state_dict()
    err = (module(IDS) - ref(IDS)).abs().max() / ref(IDS).abs().max()
    assert err < 0.08


def test_missing_unexpected_and_misshaped_tensors_name_the_file(tmp_path):
    sd = dict(toy().state_dict())
    save_file({k: v for k, v in sd.items() if k != "norm.bias"}, str(tmp_path / "missing.safetensors"))
    with pytest.raises(
        CheckpointFormatError, match="missing.safetensors.*missing from the checkpoint.*norm.bias"
    ):
        load_module(Toy, Source(inspect_weights(tmp_path / "missing.safetensors")))
    save_file({**sd, "extra.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointFormatError, match="extra.safetensors.*does not have.*extra.weight"):
        load_module(Toy, Source(inspect_weights(tmp_path / "extra.safetensors")))
    save_file({**sd, "lin.weight": torch.zeros(32, 17)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(
        CheckpointFormatError, match=r"shape.safetensors.*lin.weight: file \(32, 17\) vs model \(32, 16\)"
    ):
        load_module(Toy, Source(inspect_weights(tmp_path / "shape.safetensors")))


def test_converter_groups_see_related_keys_together(tmp_path):
    ref = toy()
    sd = {k.replace("lin.", "proj_in."): v.contiguous() for k, v in ref.state_dict().items()}
    # split lin.weight into two halves, as diffusers splits q/k/v
    w = sd.pop("proj_in.weight")
    sd["proj_in.a.weight"], sd["proj_in.b.weight"] = w[:16].contiguous(), w[16:].contiguous()
    save_file(sd, str(tmp_path / "c.safetensors"))
    seen_groups = []

    def convert(group):
        seen_groups.append(sorted(group))
        out = {}
        for k, v in group.items():
            if k.startswith("proj_in.a."):
                out["lin.weight"] = torch.cat([v, group["proj_in.b.weight"]])
            elif k.startswith("proj_in.b."):
                continue
            else:
                out[k.replace("proj_in.", "lin.")] = v
        return out

    source = Source(
        inspect_weights(tmp_path / "c.safetensors"), convert=convert, group_of=lambda k: k.split(".")[0]
    )
    module = load_module(Toy, source)
    torch.testing.assert_close(module(IDS), ref(IDS), rtol=0, atol=0)
    assert ["proj_in.a.weight", "proj_in.b.weight", "proj_in.bias"] in seen_groups


# --- families, wrong files, unsupported formats (on the tiny demo files) -------------------------


@pytest.mark.parametrize(
    ("loader", "name", "expected", "found"),
    [
        (formats.load_flux_transformer, "vae/ae.safetensors", "FLUX.1 diffusion model", "FLUX.1 VAE"),
        (formats.load_autoencoder, "text_encoders/clip_l.safetensors", "FLUX.1 VAE", "CLIP-L text encoder"),
        (
            formats.load_text_encoder,
            "diffusion_models/flux1-dev.safetensors",
            "CLIP-L or T5-XXL",
            "FLUX.1 diffusion model",
        ),
        (
            formats.load_checkpoint,
            "text_encoders/t5xxl_fp16.safetensors",
            "all-in-one checkpoint",
            "T5-XXL text encoder",
        ),
    ],
)
def test_wrong_family_names_file_expected_and_found(demo_models_dir, loader, name, expected, found):
    with pytest.raises(WrongFamilyError) as info:
        loader(demo_models_dir / name)
    message = str(info.value)
    assert name.split("/")[-1] in message and expected in message and found in message
    assert isinstance(info.value, ValueError)


def test_text_encoder_kind_picks_one_from_a_checkpoint(demo_models_dir):
    ck = demo_models_dir / "checkpoints" / "flux1-schnell.safetensors"
    with pytest.raises(CheckpointFormatError, match="several text encoders"):
        formats.load_text_encoder(ck)
    assert formats.load_text_encoder(ck, "t5xxl").kind == "t5xxl"
    assert formats.load_autoencoder(ck).params.z_channels == 16  # the VAE part of an all-in-one file


def test_truncated_checkpoint_fails_before_building(demo_models_dir, tmp_path):
    data = (demo_models_dir / "diffusion_models" / "flux1-dev.safetensors").read_bytes()
    cut = tmp_path / "flux1-dev.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointFormatError, match=r"flux1-dev.safetensors: truncated: tensor '.*' ends at byte"
    ):
        formats.load_flux_transformer(cut)
    # a shard of a diffusers folder missing
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(demo_models_dir / "diffusers" / "FLUX.1-dev-tiny" / "transformer", folder)
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        CheckpointFormatError, match="diffusion_pytorch_model-00002-of-00002.safetensors: file not found"
    ):
        formats.load_flux_transformer(folder)


def test_mismatched_tensor_in_a_real_layout_names_the_key(tmp_path, demo_models_dir):
    from safetensors.torch import load_file

    state = load_file(str(demo_models_dir / "diffusion_models" / "flux1-dev.safetensors"))
    state["double_blocks.1.img_mlp.2.weight"] = state["double_blocks.1.img_mlp.2.weight"][
        :, :100
    ].contiguous()
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(
        CheckpointFormatError,
        match=r"bad.safetensors.*double_blocks.1.img_mlp.2.weight: file "
        r"\(128, 100\) vs model \(128, 512\)",
    ):
        formats.load_flux_transformer(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(
    ("key", "shape", "match"),
    [
        ("double_stream_modulation_img.lin.weight", (4, 4), "FLUX.2"),
        ("distilled_guidance_layer.in_proj.weight", (4, 4), "Chroma"),
        ("double_blocks.0.img_attn.qkv.weight.quant_state.bitsandbytes__nf4", (4,), "NF4"),
    ],
)
def test_unsupported_families_are_refused_by_name(tmp_path, key, shape, match):
    save_file({key: torch.zeros(shape), "img_in.weight": torch.zeros(4, 4)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(UnsupportedFormatError, match=f"m.safetensors: this is .*{match}"):
        formats.load_flux_transformer(tmp_path / "m.safetensors")


def test_sd_vae_is_refused_with_its_latent_channels(tmp_path, demo_models_dir):
    from safetensors.torch import load_file

    state = load_file(str(demo_models_dir / "vae" / "ae.safetensors"))
    state["decoder.conv_in.weight"] = torch.zeros(64, 4, 3, 3)
    save_file(state, str(tmp_path / "sdxl_vae.safetensors"))
    with pytest.raises(UnsupportedFormatError, match="sdxl_vae.safetensors: VAE has 4 latent channels"):
        formats.load_autoencoder(tmp_path / "sdxl_vae.safetensors")


def test_prefixed_bfl_file_and_scaled_fp8_transformer(tmp_path, demo_models_dir):
    from safetensors.torch import load_file

    from models.tiny import TINY_FLUX_DEV

    state = load_file(str(demo_models_dir / "diffusion_models" / "flux1-dev.safetensors"))
    scaled = {"model.diffusion_model.scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if value.ndim == 2 and not key.startswith(("img_in", "txt_in")):
            scale = value.float().abs().max() / 448
            scaled[f"model.diffusion_model.{key}"] = (value.float() / scale).to(torch.float8_e4m3fn)
            scaled[f"model.diffusion_model.{key[: -len('.weight')]}.scale_weight"] = scale.reshape(1)
        else:
            scaled[f"model.diffusion_model.{key}"] = value
    save_file(scaled, str(tmp_path / "flux1-dev-scaled.safetensors"))
    detection = formats.detect_path(tmp_path / "flux1-dev-scaled.safetensors")
    part = detection.get("flux")
    assert (part.prefix, part.fp8, part.scaled_fp8) == ("model.diffusion_model.", "float8_e4m3fn", True)
    model = formats.load_flux_transformer(
        tmp_path / "flux1-dev-scaled.safetensors", compute_dtype=torch.float32
    )
    reference = formats.load_flux_transformer(
        demo_models_dir / "diffusion_models" / "flux1-dev.safetensors", compute_dtype=torch.float32
    )
    assert (
        model.params == TINY_FLUX_DEV
        and model.double_blocks[0].img_mlp[0].weight.dtype == torch.float8_e4m3fn
    )
    from tests.test_tiny_models import flux_inputs

    x = flux_inputs(TINY_FLUX_DEV)
    a, b = reference(**x), model(**x)
    assert ((a - b).norm() / a.norm()).item() < 0.1
