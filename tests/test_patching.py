"""Patches applied by the memory manager: exact undo for bf16, fp8 and bypass, re-patching without reloads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.formats.fp8 import CastLinear
from models.memory import MemoryManager, module_bytes
from models.patches import ClipHandle, ModelHandle, WeightPatch
from models.patching import parts_of, with_bypass
from models.text.encode import TextEncoders


class Net(nn.Module):
    def __init__(self, dtype: torch.dtype = torch.bfloat16, depth: int = 4, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(width, width).to(dtype)
        self.blocks = nn.ModuleList(nn.Linear(width, width).to(dtype) for _ in range(depth))
        self.norm = nn.LayerNorm(width).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.norm(x)


def snapshot(module: nn.Module) -> dict[str, bytes]:
    return {
        k: v.detach().contiguous().view(torch.uint8).numpy().tobytes() for k, v in module.state_dict().items()
    }


def lora(key: str, out: int, inp: int, rank: int = 4, strength: float = 1.0, seed: int = 1) -> WeightPatch:
    g = torch.Generator().manual_seed(seed)
    up, down = torch.randn(out, rank, generator=g) * 0.1, torch.randn(rank, inp, generator=g) * 0.1
    return WeightPatch(key, "lora", (up, down), strength=strength, alpha=2.0)


def reference_weight(base: torch.Tensor, patches: list[WeightPatch]) -> torch.Tensor:
    """Float64 merge from the formulas: diff adds s*d, lora adds s*alpha/rank*(up@down)."""
    w = base.double()
    for p in patches:
        if p.kind == "diff":
            w = w + p.strength * p.tensors[0].double()
        else:
            up, down = p.tensors[0].double(), p.tensors[1].double()
            w = w + p.strength * (p.alpha / down.shape[0]) * (up @ down)
    return w


def test_bf16_patch_is_applied_on_load_and_undone_exactly():
    net = Net()
    before = snapshot(net)
    patches = (
        lora("blocks.1.weight", 32, 32),
        WeightPatch("blocks.1.bias", "diff", (torch.full((32,), 0.5),)),
        WeightPatch("norm.weight", "diff", (torch.full((32,), 0.25),)),
    )
    plain, patched = ModelHandle(net, None), ModelHandle(net, None, patches)
    memory = MemoryManager()
    with memory.use(patched):
        base = _base(before, "blocks.1.weight")
        assert net.blocks[1].weight.dtype == torch.bfloat16
        torch.testing.assert_close(
            net.blocks[1].weight.double(), reference_weight(base, [patches[0]]), atol=2e-2, rtol=1e-2
        )  # one bf16 rounding of the float32 result
        delta = 0.5 * (patches[0].tensors[0] @ patches[0].tensors[1])  # alpha 2 / rank 4
        assert torch.equal(net.blocks[1].weight, (base.float() + delta).bfloat16())
        assert torch.equal(net.norm.weight, (_base(before, "norm.weight").float() + 0.25).bfloat16())
    assert snapshot(net) != before  # patches stay while nothing else needs the model
    with memory.use(plain):
        assert snapshot(net) == before
    with memory.use(patched):
        pass
    memory.free_all()
    assert snapshot(net) == before


def _base(snap: dict[str, bytes], key: str) -> torch.Tensor:
    raw = torch.frombuffer(bytearray(snap[key]), dtype=torch.uint8)
    return (
        raw.view(torch.bfloat16).reshape(32, 32)
        if key.endswith("blocks.1.weight")
        else raw.view(torch.bfloat16)
    )


def fp8_net() -> Net:
    net = Net(torch.bfloat16)
    for layer in [net.inp, *net.blocks]:
        layer.weight.data = layer.weight.data.to(torch.float8_e4m3fn)
        CastLinear.adopt(layer, torch.bfloat16)
    return net


def test_fp8_patches_run_as_adapters_and_never_touch_the_fp8_weights():
    net = fp8_net()
    before = snapshot(net)
    patch = lora("blocks.2.weight", 32, 32)
    memory = MemoryManager()
    x = torch.randn(3, 32)
    with memory.use(ModelHandle(net, None, (patch,))):
        assert snapshot(net) == before
        layer = net.blocks[2]
        got = layer(x.bfloat16()).double()
        w = reference_weight(layer.weight.float(), [patch])
        want = x.bfloat16().double() @ w.T + layer.bias.double()
        torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)  # bf16 activations
        assert len(layer._forward_hooks) == 1
    with memory.use(ModelHandle(net, None)):
        assert not net.blocks[2]._forward_hooks
        plain = net.blocks[2](x.bfloat16())
    want = F.linear(x.bfloat16(), net.blocks[2].weight.bfloat16(), net.blocks[2].bias)
    assert torch.equal(plain, want)
    assert snapshot(net) == before


def test_bypass_mode_matches_weight_edits_and_leaves_weights_alone():
    net = Net(torch.float32)
    before = snapshot(net)
    patches = (
        lora("blocks.0.weight", 32, 32),
        lora("blocks.3.weight", 32, 32, seed=3),
        WeightPatch("blocks.3.bias", "diff", (torch.full((32,), 0.1),)),
    )
    x = torch.randn(5, 32)
    memory = MemoryManager()
    handle = ModelHandle(net, None, patches)
    with memory.use(handle):
        edited = net(x)
    with memory.use(with_bypass(handle)):
        assert snapshot(net) == before
        bypassed = net(x)
    torch.testing.assert_close(bypassed, edited, atol=1e-5, rtol=1e-5)
    memory.free_all()
    assert snapshot(net) == before and all(not m._forward_hooks for m in net.modules())


def test_two_handles_of_one_base_and_strength_changes_repatch_without_loading_again():
    net = Net(torch.float32)
    a = ModelHandle(net, None, (lora("blocks.0.weight", 32, 32, strength=1.0),))
    b = ModelHandle(net, None, (lora("blocks.1.weight", 32, 32, seed=7),))
    half = a.clone(patches=tuple(p.with_strength(0.5) for p in a.patches))
    base0 = net.blocks[0].weight.detach().clone()
    memory = MemoryManager()
    with memory.use(a):
        w_a = net.blocks[0].weight.detach().clone()
    with memory.use(b):
        assert torch.equal(net.blocks[0].weight, base0)
    with memory.use(half):
        w_half = net.blocks[0].weight.detach().clone()
    assert memory.stats.loads == 1  # one placement; the rest were re-patches
    delta = a.patches[0].tensors[0] @ a.patches[0].tensors[1] * 0.5
    torch.testing.assert_close(w_a - base0, delta, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w_half - base0, 0.5 * delta, atol=1e-6, rtol=1e-5)


def test_patched_streaming_model_matches_the_patched_resident_model():
    net = Net(torch.float32, depth=8)
    patches = tuple(lora(f"blocks.{i}.weight", 32, 32, seed=i) for i in range(8))
    handle = ModelHandle(net, None, patches)
    x = torch.randn(2, 32)
    unlimited = MemoryManager()
    with unlimited.use(handle):
        expected = net(x)
    unlimited.free_all()
    before = snapshot(net)
    for bypass in (False, True):
        adapters = 8 * 32 * 32 * 4 if bypass else 0  # float32 deltas live on the device beside the weights
        budget = module_bytes(net) // 3 + adapters
        memory = MemoryManager(budget_bytes=budget)
        with memory.use(with_bypass(handle, bypass)):
            assert memory.is_streamed(net)
            torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
        assert memory.stats.peak_bytes <= budget
        memory.free_all()
        assert snapshot(net) == before


def test_clip_handle_patches_reach_their_encoder():
    clip, t5 = nn.Linear(8, 8), nn.Linear(8, 8)
    patch = WeightPatch("t5xxl.weight", "diff", (torch.ones(8, 8),))
    handle = ClipHandle(TextEncoders(clip=clip, t5=t5), patches=(patch,))
    (clip_part, t5_part) = parts_of(handle)
    assert not clip_part.patches and t5_part.patches[0].key == "weight"
    base = t5.weight.detach().clone()
    memory = MemoryManager()
    with memory.use(handle):
        torch.testing.assert_close(t5.weight, base + 1)
    edits = memory.stats.patched_tensors
    with memory.use(handle):  # the same patches again: nothing to redo
        torch.testing.assert_close(t5.weight, base + 1)
    assert memory.stats.patched_tensors == edits == 1
