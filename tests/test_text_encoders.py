"""Text encoders: file layouts, config detection, tokenizers, ComfyUI-style FLUX prompt encoding.

References: transformers' own CLIPTextModel / T5EncoderModel built directly from the same config and
weights, SentencePiece's own encoder, a plain BPE written here, and the CLIP-L / T5-XXL facts of
flux-formats.md §5. Outputs must match within 1e-5 (float32 everywhere).
"""

from __future__ import annotations

import json
import shutil

import pytest
import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, T5EncoderModel

from models.formats.errors import WrongFamilyError
from models.formats.fp8 import CastLinear
from models.text.clip import CLIP_L, CLIP_TINY, clip_config
from models.text.encode import TextEncoders, encode_flux_prompt, t5_max_length_for
from models.text.errors import MissingTextEncoderError, TokenizerDownloadError, TokenizerFilesMissing
from models.text.layouts import detect_text_encoder, find_text_encoders
from models.text.loading import (
    assemble,
    build_meta,
    load_checkpoint_text_encoders,
    load_diffusers_text_encoders,
    load_state_dict_encoder,
    load_text_encoder_file,
    params_from_shapes,
)
from models.text.prompt import parse_weights, tokenize_clip, tokenize_t5
from models.text.t5 import T5_TINY, T5_XXL, t5_config
from models.text.tiny_tokenizers import write_tiny_tokenizers
from models.text.tokenizers import fetch_tokenizers as fetch
from models.text.tokenizers import load_clip_tokenizer, load_flux_tokenizers, load_t5_tokenizer

TOL = 1e-5
AIO_CLIP, AIO_T5 = "text_encoders.clip_l.transformer.", "text_encoders.t5xxl.transformer."


# --- fixtures: seeded reference models, their files in each layout, tiny tokenizers --------------


@pytest.fixture(scope="module")
def ref_clip() -> CLIPTextModel:
    torch.manual_seed(0)
    return CLIPTextModel(clip_config(CLIP_TINY)).eval()


@pytest.fixture(scope="module")
def ref_t5() -> T5EncoderModel:
    torch.manual_seed(1)
    return T5EncoderModel(t5_config(T5_TINY)).eval()


def clip_file_sd(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """ComfyUI clip_l.safetensors layout: HF keys under text_model., plus the extras real files carry."""
    sd = {
        (k if k.startswith("text_model.") else "text_model." + k): v.clone()
        for k, v in model.state_dict().items()
    }
    width = CLIP_TINY.hidden_size
    sd["text_projection.weight"] = torch.randn(width, width)
    sd["logit_scale"] = torch.tensor(4.6052)
    sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return sd


def t5_file_sd(model: torch.nn.Module, *, tied_copy: bool = False) -> dict[str, torch.Tensor]:
    """ComfyUI t5xxl_*.safetensors layout: `shared.weight` + `encoder.*` (optionally the tied copy)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if not tied_copy:
        del sd["encoder.embed_tokens.weight"]
    return sd


def outputs_match(ref: torch.nn.Module, got: torch.nn.Module, vocab: int, *, pooled: bool) -> float:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab - 2, (2, 77), generator=gen)
    ids[:, 30] = vocab - 1  # an EOS for CLIP pooling
    with torch.no_grad():
        a, b = ref(input_ids=ids), got(input_ids=ids)
    err = (a.last_hidden_state - b.last_hidden_state).abs().max().item()
    if pooled:
        err = max(err, (a.pooler_output - b.pooler_output).abs().max().item())
    return err


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tiny_tokenizers(root)
    return root


@pytest.fixture(scope="module")
def toks(models_dir):
    return load_flux_tokenizers(models_dir)


# --- file layouts -> meta-built modules ---------------------------------------------------------


def test_comfy_single_files_load_and_match_transformers(tmp_path, ref_clip, ref_t5):
    save_file(clip_file_sd(ref_clip), str(tmp_path / "clip_l.safetensors"))
    save_file(t5_file_sd(ref_t5), str(tmp_path / "t5xxl_fp32.safetensors"))
    clip = load_text_encoder_file(tmp_path / "clip_l.safetensors")
    t5 = load_text_encoder_file(tmp_path / "t5xxl_fp32.safetensors")
    assert (clip.kind, clip.params, t5.kind, t5.params) == ("clip_l", CLIP_TINY, "t5xxl", T5_TINY)
    assert outputs_match(ref_clip, clip.module, CLIP_TINY.vocab_size, pooled=True) <= TOL
    assert outputs_match(ref_t5, t5.module, 500, pooled=False) <= TOL
    assert t5.module.encoder.embed_tokens.weight is t5.module.shared.weight  # one table, tied on load


def test_all_in_one_checkpoint_prefixes(tmp_path, ref_clip, ref_t5):
    sd = {AIO_CLIP + k: v for k, v in clip_file_sd(ref_clip).items()}
    sd |= {AIO_T5 + k: v for k, v in t5_file_sd(ref_t5, tied_copy=True).items()}
    sd |= {
        "model.diffusion_model.img_in.weight": torch.zeros(8, 4),
        "vae.decoder.conv_in.weight": torch.zeros(2),
    }
    save_file(sd, str(tmp_path / "flux_aio.safetensors"))
    assert find_text_encoders(sd) == {"clip_l": AIO_CLIP, "t5xxl": AIO_T5}
    got = load_checkpoint_text_encoders(tmp_path / "flux_aio.safetensors")
    assert outputs_match(ref_clip, got["clip_l"].module, CLIP_TINY.vocab_size, pooled=True) <= TOL
    assert outputs_match(ref_t5, got["t5xxl"].module, 500, pooled=False) <= TOL
    with pytest.raises(ValueError, match="several text encoders"):
        load_text_encoder_file(tmp_path / "flux_aio.safetensors")
    legacy = {k.replace("text_encoders.", "cond_stage_model."): v for k, v in sd.items()}
    assert load_state_dict_encoder(legacy, kind="t5xxl").params == T5_TINY


def test_diffusers_folders_sharded(tmp_path, models_dir, ref_clip, ref_t5):
    te1, te2 = tmp_path / "text_encoder", tmp_path / "text_encoder_2"
    te1.mkdir()
    te2.mkdir()
    clip_sd = {
        k: v for k, v in clip_file_sd(ref_clip).items() if not k.startswith(("text_projection", "logit"))
    }
    save_file(clip_sd, str(te1 / "model.safetensors"))
    t5_sd = t5_file_sd(ref_t5)
    keys = sorted(t5_sd)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: t5_sd[k] for k in part}, str(te2 / name))
    index = {"metadata": {}, "weight_map": {k: n for n, part in shards.items() for k in part}}
    (te2 / "model.safetensors.index.json").write_text(json.dumps(index))
    assert (
        outputs_match(ref_clip, load_text_encoder_file(te1).module, CLIP_TINY.vocab_size, pooled=True) <= TOL
    )
    assert outputs_match(ref_t5, load_text_encoder_file(te2).module, 500, pooled=False) <= TOL
    shutil.copytree(models_dir / "tokenizers" / "clip_l", tmp_path / "tokenizer")
    shutil.copytree(models_dir / "tokenizers" / "t5xxl", tmp_path / "tokenizer_2")
    pipe = load_diffusers_text_encoders(tmp_path)
    assert outputs_match(ref_t5, pipe.t5, 500, pooled=False) <= TOL and len(pipe.clip_tokenizer) == 768


def test_assemble_rejects_tokenizer_larger_than_vocab(ref_clip):
    class RealSizeTokenizer:
        name_or_path = "models/tokenizers/clip_l"

        def __len__(self) -> int:
            return 49408

    clip = load_state_dict_encoder(clip_file_sd(ref_clip))
    with pytest.raises(ValueError, match="49408 ids but the model's vocabulary has 768"):
        assemble([clip], RealSizeTokenizer(), None)
    with pytest.raises(ValueError, match="two clip_l"):
        assemble([clip, clip], None, None)


def test_in_memory_converters_and_untied_embedding_name(ref_clip, ref_t5):
    clip = load_state_dict_encoder(clip_file_sd(ref_clip))
    assert outputs_match(ref_clip, clip.module, CLIP_TINY.vocab_size, pooled=True) <= TOL
    sd = t5_file_sd(ref_t5)
    sd["encoder.embed_tokens.weight"] = sd.pop("shared.weight")  # only the encoder's name for the table
    assert outputs_match(ref_t5, load_state_dict_encoder(sd).module, 500, pooled=False) <= TOL


def test_fp16_kept_and_scaled_fp8_dequantized(tmp_path, ref_t5):
    sd = t5_file_sd(ref_t5)
    save_file({k: v.half() for k, v in sd.items()}, str(tmp_path / "t5xxl_fp16.safetensors"))
    half = load_text_encoder_file(tmp_path / "t5xxl_fp16.safetensors").module
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    # ComfyUI scaled fp8: Linear weights e4m3fn + per-tensor scale_weight, `scaled_fp8` marker
    fp8, ref = dict(sd), T5EncoderModel(t5_config(T5_TINY)).eval()
    deq = {}
    for key, w in sd.items():
        if w.ndim == 2 and ".block." in key and "relative_attention_bias" not in key:
            scale = w.abs().max() / 448.0
            fp8[key] = (w / scale).to(torch.float8_e4m3fn)
            fp8[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
            deq[key] = fp8[key].float() * scale  # float64-free: exactly what the weights now mean
    fp8["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(fp8, str(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors"))
    ref.load_state_dict({**ref_t5.state_dict(), **deq})
    got = load_text_encoder_file(
        tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors", compute_dtype=torch.float32
    )
    q = got.module.encoder.block[0].layer[0].SelfAttention.q
    assert isinstance(q, CastLinear) and q.weight.dtype == torch.float8_e4m3fn  # stays 1 byte per weight
    assert outputs_match(ref, got.module, 500, pooled=False) <= TOL


def test_not_a_text_encoder_names_the_file(tmp_path):
    save_file({"img_in.weight": torch.zeros(4, 4)}, str(tmp_path / "flux1-dev.safetensors"))
    with pytest.raises(WrongFamilyError, match="flux1-dev.safetensors.*CLIP-L or T5"):
        load_text_encoder_file(tmp_path / "flux1-dev.safetensors")


# --- detection and config from shapes -----------------------------------------------------------


def file_shapes(module: torch.nn.Module, kind: str) -> dict[str, tuple[int, ...]]:
    sd = clip_file_sd(module) if kind == "clip_l" else t5_file_sd(module)
    return {k: tuple(v.shape) for k, v in sd.items()}


def meta_shapes(kind: str, params) -> dict[str, tuple[int, ...]]:
    sd = build_meta(kind, params).state_dict()
    if kind == "clip_l":
        return {
            (k if k.startswith("text_model.") else "text_model." + k): tuple(v.shape) for k, v in sd.items()
        }
    return {k: tuple(v.shape) for k, v in sd.items() if k != "encoder.embed_tokens.weight"}


def test_detect_and_params_tiny_and_full_size(ref_clip, ref_t5):
    assert detect_text_encoder(file_shapes(ref_clip, "clip_l")) == "clip_l"
    assert params_from_shapes("clip_l", file_shapes(ref_clip, "clip_l")) == CLIP_TINY
    assert params_from_shapes("t5xxl", file_shapes(ref_t5, "t5xxl")) == T5_TINY
    clip_l, t5xxl = meta_shapes("clip_l", CLIP_L), meta_shapes("t5xxl", T5_XXL)  # no weights allocated
    assert detect_text_encoder(clip_l) == "clip_l" and detect_text_encoder(t5xxl) == "t5xxl"
    assert params_from_shapes("clip_l", clip_l) == CLIP_L and params_from_shapes("t5xxl", t5xxl) == T5_XXL
    # flux-formats §5: CLIP-L 49408 x 768, 12 layers, fc1 3072, 77 positions; T5 32128 x 4096, 24 blocks,
    # q/k/v/o 4096 x 4096, wi 10240 x 4096, relative bias [32, 64] in block 0 only.
    assert clip_l["text_model.embeddings.token_embedding.weight"] == (49408, 768)
    assert clip_l["text_model.encoder.layers.11.mlp.fc1.weight"] == (3072, 768)
    assert t5xxl["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] == (32, 64)
    assert t5xxl["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] == (10240, 4096)
    layer = 4 * 4096 * 4096 + 3 * 10240 * 4096 + 2 * 4096
    assert sum(torch.Size(s).numel() for s in t5xxl.values()) == 32128 * 4096 + 24 * layer + 32 * 64 + 4096
    assert len(t5xxl) == 219


def test_detect_rejects_other_families():
    clip_g = {
        "text_model.embeddings.token_embedding.weight": (49408, 1280),
        "text_model.final_layer_norm.weight": (1280,),
        "text_model.encoder.layers.0.mlp.fc1.weight": (5120, 1280),
    }
    umt5 = {
        "shared.weight": (256384, 4096),
        "encoder.final_layer_norm.weight": (4096,),
        "encoder.block.0.layer.0.SelfAttention.q.weight": (4096, 4096),
        "encoder.block.0.layer.1.DenseReluDense.wi_0.weight": (10240, 4096),
        "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": (32, 64),
    }
    vae = {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_out.weight": (3, 128, 3, 3)}
    assert [detect_text_encoder(s) for s in (clip_g, umt5, vae, {})] == [None] * 4


# --- tokenizers ---------------------------------------------------------------------------------


def test_tiny_tokenizers_deterministic(tmp_path, models_dir):
    files = write_tiny_tokenizers(tmp_path)
    for path in files:
        assert path.read_bytes() == (models_dir / path.relative_to(tmp_path)).read_bytes(), path.name


def reference_bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Textbook BPE on one lowercase ASCII word: merge the lowest-ranked adjacent pair until none apply."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while True:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs, default=(1 << 30, -1))
        if rank == 1 << 30:
            return symbols
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]


def test_clip_tokenizer_files_follow_bpe(models_dir, toks):
    folder = models_dir / "tokenizers" / "clip_l"
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    ranks = {tuple(line.split()): i for i, line in enumerate(lines[1:])}
    text = "a misty forest with a golden dragon and zebras"
    expected = [vocab[s] for w in text.split() for s in reference_bpe(w, ranks)]
    clip_tok = toks[0]
    assert clip_tok(text)["input_ids"] == [CLIP_TINY.bos_token_id, *expected, CLIP_TINY.eos_token_id]
    assert (
        clip_tok.decode(clip_tok("A Misty  forest!")["input_ids"], skip_special_tokens=True)
        == "a misty forest !"
    )


def test_t5_tokenizer_matches_sentencepiece_and_tokenizer_json(tmp_path, models_dir, toks):
    folder = models_dir / "tokenizers" / "t5xxl"
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    text = "A cozy Cabin under the stars, 35mm film (masterpiece:1.2)"
    ids = toks[1](text)["input_ids"]
    assert ids == sp.encode(text) + [1] and ids[-1] == 1  # T5 appends </s>, no BOS
    assert toks[1].decode(ids, skip_special_tokens=True) == text
    toks[1].save_pretrained(str(tmp_path / "json_only"))
    (tmp_path / "json_only" / "spiece.model").unlink(missing_ok=True)
    assert load_t5_tokenizer([tmp_path / "json_only"])(text)["input_ids"] == ids


def test_diffusers_tokenizer_folders_searched_first(tmp_path, models_dir):
    shutil.copytree(models_dir / "tokenizers" / "clip_l", tmp_path / "pipe" / "tokenizer")
    shutil.copytree(models_dir / "tokenizers" / "t5xxl", tmp_path / "pipe" / "tokenizer_2")
    clip_tok, t5_tok = load_flux_tokenizers(tmp_path / "empty_models", diffusers_dir=tmp_path / "pipe")
    assert len(clip_tok) == CLIP_TINY.vocab_size and len(t5_tok) == 500


def test_missing_tokenizer_files_say_what_and_where(tmp_path):
    with pytest.raises(TokenizerFilesMissing) as err:
        load_clip_tokenizer([tmp_path / "tokenizers" / "clip_l"])
    message = str(err.value)
    for part in (
        str(tmp_path / "tokenizers" / "clip_l"),
        "vocab.json",
        "merges.txt",
        "python main.py fetch-tokenizers",
    ):
        assert part in message
    with pytest.raises(
        FileNotFoundError, match=r"tokenizer\.json \(or spiece\.model\) into .*pipe/tokenizer_2 or "
    ):
        load_t5_tokenizer([tmp_path / "pipe" / "tokenizer_2", tmp_path / "tokenizers" / "t5xxl"])


def test_fetch_offline_fails_clearly(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(TokenizerDownloadError) as err:
        fetch(tmp_path)
    message = str(err.value)
    assert "openai/clip-vit-large-patch14" in message and "vocab.json" in message
    assert str(tmp_path / "tokenizers" / "clip_l") in message and "by hand" in message


# --- ComfyUI tokenization rules -----------------------------------------------------------------


def test_weight_syntax_as_comfyui():
    assert parse_weights("(foo)(bar)") == [("foo", pytest.approx(1.1)), ("bar", pytest.approx(1.1))]
    assert parse_weights("((foo))") == [("foo", pytest.approx(1.21))]
    assert parse_weights("((foo):1.1)") == [("foo", pytest.approx(1.21))]
    assert parse_weights("((foo:1.1))") == [("foo", 1.1)]
    assert parse_weights("foo ((((lol (cat:666) attack):100))) baz") == [
        ("foo ", 1.0),
        ("lol ", pytest.approx(110.0)),
        ("cat", 666.0),
        (" attack", pytest.approx(110.0)),
        (" baz", 1.0),
    ]
    assert parse_weights(r"\(not weighted\) (a:b)") == [("(not weighted) ", 1.0), ("a:b", pytest.approx(1.1))]


def test_clip_chunks_and_padding(toks):
    ids = lambda t: toks[0](t)["input_ids"]  # noqa: E731
    bos, eos = CLIP_TINY.bos_token_id, CLIP_TINY.eos_token_id
    _, a, _ = ids("a")  # one token
    (short,) = tokenize_clip(ids, "a a")
    assert [t for t, _ in short] == [bos, a, a, eos] + [eos] * 73
    first, second = tokenize_clip(ids, "a " * 100)  # one long segment: split at the boundary
    assert [t for t, _ in first] == [bos] + [a] * 75 + [eos]
    assert [t for t, _ in second] == [bos] + [a] * 25 + [eos] * 51
    first, second = tokenize_clip(ids, "a " * 70 + "(a a a a a a a:1.2)")  # a short one moves whole
    assert [t for t, _ in first] == [bos] + [a] * 70 + [eos] * 6
    assert [(t, round(w, 3)) for t, w in second[1:9]] == [(a, 1.2)] * 7 + [(eos, 1.0)]
    (empty,) = tokenize_clip(ids, "")
    assert [t for t, _ in empty] == [bos] + [eos] * 76


def test_t5_lengths_end_token_and_empty(toks):
    ids = lambda t: toks[1](t)["input_ids"]  # noqa: E731
    plain = ids("a red cat")
    tokens = [t for t, _ in tokenize_t5(ids, "a red cat")]
    assert tokens == plain + [0] * (256 - len(plain))
    assert [t for t, _ in tokenize_t5(ids, "")] == [1] + [0] * 255
    long = [t for t, _ in tokenize_t5(ids, "cat " * 300)]
    assert len(long) == len(ids("cat " * 300)) and long[-1] == 1  # ComfyUI: never truncated
    capped = [t for t, _ in tokenize_t5(ids, "cat " * 300, max_length=128)]
    assert len(capped) == 128 and capped[-1] == 1 and capped[:127] == long[:127]
    assert len(tokenize_t5(ids, "a cat", max_length=512)) == 256
    assert len(tokenize_t5(ids, "a cat", min_length=512, max_length=512)) == 512  # BFL dev
    assert t5_max_length_for("flux1-schnell") == 256 and t5_max_length_for("dev") == 512


# --- encode_flux_prompt against the transformers models fed the reference tokenization ----------


@pytest.fixture(scope="module")
def encoders(ref_clip, ref_t5, toks) -> TextEncoders:
    clip = load_state_dict_encoder(clip_file_sd(ref_clip)).module
    t5 = load_state_dict_encoder(t5_file_sd(ref_t5)).module
    return TextEncoders(clip=clip, t5=t5, clip_tokenizer=toks[0], t5_tokenizer=toks[1])


def reference(ref_clip, ref_t5, toks, clip_text: str, t5_text: str, t5_len: int):
    c = toks[0](clip_text, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    t = toks[1](t5_text, padding="max_length", max_length=t5_len, return_tensors="pt")
    with torch.no_grad():
        return ref_t5(input_ids=t.input_ids).last_hidden_state, ref_clip(input_ids=c.input_ids).pooler_output


@pytest.mark.parametrize(
    "clip_text,t5_text",
    [
        ("a photo of a cat", "A cozy cabin in the snowy mountains at dusk"),
        ("", ""),
        ("a misty forest " * 40, "a golden dragon over a river, highly detailed"),
    ],
)
def test_encode_flux_prompt_matches_reference(encoders, ref_clip, ref_t5, toks, clip_text, t5_text):
    context, pooled = encode_flux_prompt(encoders, clip_text, t5_text)
    ref_context, ref_pooled = reference(ref_clip, ref_t5, toks, clip_text, t5_text, 256)
    assert context.shape == (1, 256, T5_TINY.d_model) and pooled.shape == (1, CLIP_TINY.hidden_size)
    assert context.dtype == pooled.dtype == torch.float32
    assert (context - ref_context).abs().max() <= TOL and (pooled - ref_pooled).abs().max() <= TOL


def test_long_t5_prompt_is_not_truncated(encoders, ref_t5, toks):
    text = "a red cat on a blue boat " * 60
    context, _ = encode_flux_prompt(encoders, "x", text)
    ids = toks[1](text, return_tensors="pt").input_ids
    assert ids.shape[1] > 256 and context.shape[1] == ids.shape[1]
    with torch.no_grad():
        assert (context - ref_t5(input_ids=ids).last_hidden_state).abs().max() <= TOL


def test_t5_weights_interpolate_from_empty_prompt(encoders, ref_t5, toks):
    context, _ = encode_flux_prompt(encoders, "a red cat", "a (red:1.5) cat")
    ids = toks[1]("a red cat", padding="max_length", max_length=256, return_tensors="pt").input_ids
    empty = torch.tensor([[1] + [0] * 255])
    with torch.no_grad():
        z, z_empty = ref_t5(input_ids=ids).last_hidden_state, ref_t5(input_ids=empty).last_hidden_state
    red = slice(len(toks[1]("a")["input_ids"]) - 1, len(toks[1]("a red")["input_ids"]) - 1)
    expected = z.clone()
    expected[:, red] = z_empty[:, red] + (z[:, red] - z_empty[:, red]) * 1.5
    assert (context - expected).abs().max() <= TOL and (context[:, red] - z[:, red]).abs().max() > 1e-3


def test_missing_encoder_is_a_typed_error(encoders):
    with pytest.raises(MissingTextEncoderError, match="clip"):
        encode_flux_prompt(TextEncoders(t5=encoders.t5, t5_tokenizer=encoders.t5_tokenizer), "a", "a")
