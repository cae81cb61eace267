"""FLUX conditioning nodes through the executor: guidance, zero-out, combine, timestep ranges, areas,
reference latents, and the text encode nodes on tiny CLIP/T5 against the transformers models.
"""

from __future__ import annotations

import logging

import pytest
import torch

from tests.flux_node_helpers import cond, run_node

# --- conditioning plumbing ----------------------------------------------------------------------


def test_flux_guidance_sets_guidance_on_a_copy():
    original = cond()
    (out,) = run_node("FluxGuidance", {"guidance": 2.5}, {"conditioning": original})
    assert out[0][1]["guidance"] == 2.5 and "guidance" not in original[0][1]
    assert out[0][0] is original[0][0]  # tensors are shared, dicts are not
    assert out[0][1]["pooled_output"] is original[0][1]["pooled_output"]


def test_zero_out_zeroes_context_and_pooled_keeps_other_keys():
    original = cond(guidance=3.0)
    (out,) = run_node("ConditioningZeroOut", {}, {"conditioning": original})
    assert torch.count_nonzero(out[0][0]) == 0 and torch.count_nonzero(out[0][1]["pooled_output"]) == 0
    assert out[0][0].shape == original[0][0].shape and out[0][1]["guidance"] == 3.0
    assert torch.count_nonzero(original[0][0]) > 0


def test_combine_concatenates_entries():
    a, b = cond(3), cond(5)
    (out,) = run_node("ConditioningCombine", {}, {"conditioning_1": a, "conditioning_2": b})
    assert len(out) == 2 and out[0][0] is a[0][0] and out[1][0] is b[0][0]


def test_timestep_range_records_percentages():
    (out,) = run_node("ConditioningSetTimestepRange", {"start": 0.2, "end": 0.7}, {"conditioning": cond()})
    assert (out[0][1]["start_percent"], out[0][1]["end_percent"]) == (0.2, 0.7)


def test_set_area_passes_through_with_a_warning(caplog):
    original = cond()
    with caplog.at_level(logging.WARNING, logger="nodes.conditioning.flux"):
        (out,) = run_node(
            "ConditioningSetArea",
            {"width": 256, "height": 128, "x": 64, "y": 8, "strength": 0.5},
            {"conditioning": original},
        )
    assert "ignores conditioning areas" in caplog.text
    assert (
        out[0][0] is original[0][0] and out[0][1]["area"] == (16, 32, 1, 8) and out[0][1]["strength"] == 0.5
    )


def test_reference_latents_chain_and_method():
    first, second = torch.randn(1, 16, 4, 6), torch.randn(1, 16, 8, 2)
    (once,) = run_node("ReferenceLatent", {}, {"conditioning": cond(), "latent": {"samples": first}})
    (twice,) = run_node("ReferenceLatent", {}, {"conditioning": once, "latent": {"samples": second}})
    assert [t is r for t, r in zip(twice[0][1]["reference_latents"], (first, second))] == [True, True]
    assert len(once[0][1]["reference_latents"]) == 1  # the earlier value is not mutated
    (none,) = run_node("ReferenceLatent", {}, {"conditioning": once})
    assert none[0][1]["reference_latents"][0] is first
    for choice, stored in (("offset", "offset"), ("index", "index"), ("uxo/uno", "uxo")):
        (out,) = run_node(
            "FluxKontextMultiReferenceLatentMethod",
            {"reference_latents_method": choice},
            {"conditioning": twice},
        )
        assert out[0][1]["reference_latents_method"] == stored


# --- text encoding nodes on tiny CLIP/T5, against the transformers models called directly --------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from models.patches import ClipHandle
    from models.text.clip import CLIP_TINY, build_clip
    from models.text.encode import TextEncoders
    from models.text.t5 import T5_TINY, build_t5
    from models.text.tiny_tokenizers import write_tiny_tokenizers
    from models.text.tokenizers import load_flux_tokenizers

    models_dir = tmp_path_factory.mktemp("tokenizers")
    write_tiny_tokenizers(models_dir)
    clip_tok, t5_tok = load_flux_tokenizers(models_dir)
    torch.manual_seed(4)
    encoders = TextEncoders(
        clip=build_clip(CLIP_TINY), t5=build_t5(T5_TINY), clip_tokenizer=clip_tok, t5_tokenizer=t5_tok
    )
    return ClipHandle(encoders=encoders, t5_max_length=512)


def _reference_encode(clip, clip_text: str, t5_text: str) -> tuple[torch.Tensor, torch.Tensor]:
    enc = clip.encoders
    with torch.no_grad():
        pooled = enc.clip(input_ids=torch.tensor([enc.clip_tokenizer(clip_text)["input_ids"]])).pooler_output
        ids = enc.t5_tokenizer(t5_text)["input_ids"]  # ends with EOS; ComfyUI pads with 0 to 256
        context = enc.t5(input_ids=torch.tensor([ids + [0] * (256 - len(ids))])).last_hidden_state
    return context, pooled


def test_clip_text_encode_nodes(tiny_clip):
    (plain,) = run_node("CLIPTextEncode", {"text": "a fox in the snow"}, {"clip": tiny_clip})
    context, pooled = _reference_encode(tiny_clip, "a fox in the snow", "a fox in the snow")
    torch.testing.assert_close(plain[0][0], context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain[0][1]["pooled_output"], pooled, atol=1e-5, rtol=1e-5)
    assert set(plain[0][1]) == {"pooled_output"}
    (flux,) = run_node(
        "CLIPTextEncodeFlux",
        {"clip_l": "a red house", "t5xxl": "a house by the lake", "guidance": 2.0},
        {"clip": tiny_clip},
    )
    context, pooled = _reference_encode(tiny_clip, "a red house", "a house by the lake")
    torch.testing.assert_close(flux[0][0], context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flux[0][1]["pooled_output"], pooled, atol=1e-5, rtol=1e-5)
    assert flux[0][1]["guidance"] == 2.0 and flux[0][0].shape == (1, 256, 64)
