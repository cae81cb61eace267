"""MemoryManager accounting on a simulated device and budget (the CPU computes; budgets are simulated)."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from models.memory import CpuDevice, DeviceMemoryError, MemoryManager, module_bytes, partition


class Blocks(nn.Module):
    def __init__(self, width: int = 32, depth: int = 6) -> None:
        super().__init__()
        self.inp = nn.Linear(width, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return x


class Nested(nn.Module):
    """Blocks two levels down, called out of registration order, through a container without forward."""

    def __init__(self) -> None:
        super().__init__()
        self.stack = nn.Module()
        self.stack.levels = nn.ModuleList(Blocks(16, 2) for _ in range(3))
        self.norm = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for level in reversed(self.stack.levels):
            x = level(x)
        return self.norm(x)


def test_lru_eviction_keeps_the_budget():
    a, b, c = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)
    size = module_bytes(a)
    memory = MemoryManager(budget_bytes=2 * size)
    with memory.use(a):
        pass
    with memory.use(b):
        pass
    assert memory.resident_bytes == 2 * size
    with memory.use(a):  # a becomes most recent
        pass
    with memory.use(c):  # evicts b, the least recently used
        assert memory.resident_bytes == 2 * size
    assert not memory.is_loaded(b) and memory.is_loaded(a) and memory.is_loaded(c)
    assert memory.stats.peak_bytes <= 2 * size


def test_locked_models_are_never_evicted_and_big_models_stream():
    torch.manual_seed(0)
    small, big = nn.Linear(32, 32), Blocks()
    x = torch.randn(4, 32)
    expected = big(x)
    budget = module_bytes(small) + module_bytes(big) // 2
    memory = MemoryManager(budget_bytes=budget)
    with memory.use(small):
        with memory.use(big) as (model,):
            assert memory.is_loaded(small)  # locked while in use
            assert memory.is_streamed(big) and memory.resident_bytes <= budget
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    assert memory.stats.peak_bytes <= budget
    memory.free_all()
    assert memory.resident_bytes == 0 and not memory.is_streamed(big)


def test_a_streamed_model_used_twice_keeps_one_set_of_hooks():
    torch.manual_seed(0)
    big = Blocks(depth=8)
    x = torch.randn(2, 32)
    expected = big(x)
    memory = MemoryManager(budget_bytes=module_bytes(big) // 3)
    with memory.use(big):
        first = big(x)
    hooks = memory.hook_count(big)
    assert hooks > 0
    with memory.use(big):
        second = big(x)
    assert memory.hook_count(big) == hooks
    assert len(big.blocks[-1][0]._forward_pre_hooks) == 1
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)
    assert memory.stats.peak_bytes <= module_bytes(big) // 3
    memory.free_all()
    assert memory.hook_count(big) == 0 and all(not m._forward_pre_hooks for m in big.modules())


def test_nested_blocks_stream_in_any_call_order_within_the_budget():
    torch.manual_seed(0)
    model = Nested()
    x = torch.randn(3, 16)
    expected = model(x)
    split = partition(model, module_bytes(model.stack.levels[0].blocks[0]))
    assert any(u.module is model.stack.levels[2].blocks[1] for u in split.units)
    for budget in (module_bytes(model) // 2, module_bytes(model) // 5):
        memory = MemoryManager(budget_bytes=budget)
        with memory.use(model):
            out = model(x)
            out2 = model(x)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        torch.testing.assert_close(out2, expected, rtol=0, atol=0)
        assert memory.stats.peak_bytes <= budget
        assert memory.stats.bytes_moved > module_bytes(model)  # streamed units came in on both passes


def test_a_layer_larger_than_the_budget_gets_advice_that_points_the_right_way():
    memory = MemoryManager(budget_bytes=100)
    with pytest.raises(torch.OutOfMemoryError, match="Linear needs at least") as info:
        with memory.use(nn.Linear(64, 64)):
            pass
    assert isinstance(info.value, DeviceMemoryError)
    assert "raise --vram-limit" in str(info.value) and "lower --vram-limit" not in str(info.value)


def test_working_memory_counts_against_the_budget():
    model = Blocks()
    size = module_bytes(model)
    memory = MemoryManager(budget_bytes=size)
    with memory.use(model, working_bytes=0):
        assert not memory.is_streamed(model)
    with memory.use(model, working_bytes=size // 2):
        assert memory.is_streamed(model) and memory.resident_bytes <= size // 2
    with pytest.raises(DeviceMemoryError, match="activations"):
        with memory.use(model, working_bytes=size):
            pass


def test_a_weights_only_budget_ignores_working_memory_but_records_it():
    model = Blocks()
    memory = MemoryManager(budget_bytes=module_bytes(model), count_working=False)
    with memory.use(model, working_bytes=10 * module_bytes(model)):
        assert not memory.is_streamed(model)
    assert memory.stats.max_working_bytes == 10 * module_bytes(model)


def test_budget_is_free_memory_minus_the_reserve_capped_by_the_limit():
    device = CpuDevice(total_bytes=1000)
    assert MemoryManager(device).budget() == 1000
    assert MemoryManager(device, reserve_bytes=300).budget() == 700
    assert MemoryManager(device, reserve_bytes=300, budget_bytes=500).budget() == 500
    assert MemoryManager(CpuDevice()).budget() is None  # a real CPU: no limit
    assert MemoryManager(CpuDevice(), budget_bytes=64).budget() == 64


def test_models_nothing_holds_any_more_are_released():
    memory = MemoryManager(budget_bytes=1 << 20)
    kept, dropped = nn.Linear(32, 32), nn.Linear(32, 32)
    with memory.use(kept), memory.use(dropped):
        pass
    assert memory.tracked() == 2
    del dropped
    gc.collect()
    assert memory.tracked() == 1 and memory.resident_bytes == module_bytes(kept)
    with memory.use(kept):
        pass
    assert memory.tracked() == 1


def test_copies_are_real_on_a_simulated_device_and_undone_on_offload():
    model = Blocks()
    before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    memory = MemoryManager(CpuDevice(total_bytes=module_bytes(model) // 2, simulate_copies=True))
    x = torch.randn(2, 32)
    expected = model(x)
    with memory.use(model):
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    memory.free_all()
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == before


def test_the_cpu_device_reports_system_memory_as_comfyui_does():
    from models.memory import system_memory

    stats = CpuDevice().stats()
    total, _free = system_memory()
    assert stats["type"] == "cpu" and stats["vram_total"] == stats["torch_vram_total"] == total > 0
    assert 0 < stats["vram_free"] <= total


def test_a_vae_whose_activations_do_not_fit_decodes_in_tiles_and_says_so(caplog):
    from executor.schema import NodeContext
    from models.memory.working import attention_on_cpu, vae_working_bytes
    from models.patches import VaeHandle
    from models.tiny import TINY_AE, tiny_autoencoder
    from nodes.latent import vae_ops
    from nodes.runtime.services import NodeServices
    from settings import Settings

    ae = tiny_autoencoder(TINY_AE, seed=0)
    vae = VaeHandle(module=ae, params=ae.params)
    samples = torch.randn(1, 16, 24, 24, generator=torch.Generator().manual_seed(0))
    full = vae_working_bytes(
        TINY_AE,
        batch=1,
        height=192,
        width=192,
        decode=True,
        attention_matrix=attention_on_cpu(torch.device("cpu")),
    )
    budget = module_bytes(ae) + full // 2  # the weights fit, the one-piece activations do not
    memory = MemoryManager(budget_bytes=budget)
    ctx = NodeContext(
        "n", "p", NodeServices(Settings(), memory=memory), progress=lambda *a: None, should_stop=lambda: False
    )
    caplog.set_level("INFO", logger="nodes.runtime.device")
    tiled = vae_ops.decode(ctx, vae, samples)
    assert any("decoding in" in r.getMessage() and "px tiles" in r.getMessage() for r in caplog.records)
    assert tiled.shape == (1, 192, 192, 3)
    assert memory.stats.peak_bytes <= budget
    whole = vae_ops.decode(
        NodeContext("n", "p", NodeServices(Settings()), progress=lambda *a: None, should_stop=lambda: False),
        vae,
        samples,
    )
    # tiles see only their own context (GroupNorm statistics, attention), so pixels differ somewhat
    assert (tiled - whole).abs().mean() < 0.05  # measured 0.030 (max 0.28) with this random tiny VAE


def test_t5_and_clip_stacks_nested_in_transformers_models_stream_their_blocks():
    from models.tiny import TINY_CLIP, TINY_T5, tiny_clip, tiny_t5

    ids = torch.tensor([[5, 9, 17, 33, 2, 0, 0, 0]])
    for model, out in (
        (tiny_t5(TINY_T5, 0), "last_hidden_state"),
        (tiny_clip(TINY_CLIP, 0), "pooler_output"),
    ):
        expected = getattr(model(input_ids=ids), out)
        layers = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
        assert layers and all(len(list(m.parameters())) for m in layers)
        budget = module_bytes(model) // 2
        memory = MemoryManager(budget_bytes=budget)
        with memory.use(model):
            assert memory.is_streamed(model)
            got = getattr(model(input_ids=ids), out)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert memory.stats.peak_bytes <= budget
        memory.free_all()
        assert all(not m._forward_pre_hooks for m in model.modules())


def test_node_scope_turns_grad_off_and_names_the_node_on_out_of_memory():
    from executor.errors import OutOfMemory
    from models.memory import DeviceMemoryError
    from nodes.runtime.hooks import TorchNodeHooks

    hooks = TorchNodeHooks()
    assert torch.is_grad_enabled()
    with hooks.around_node("7", "KSampler"):
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()  # restored after the node
    with pytest.raises(OutOfMemory, match=r"node 7 \(KSampler\) ran out of device memory.*--reserve-vram"):
        with hooks.around_node("7", "KSampler"):
            raise torch.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(OutOfMemory, match=r"^node 8 \(VAEDecode\): needs 3 GB"):
        with hooks.around_node("8", "VAEDecode"):
            raise DeviceMemoryError("needs 3 GB")
    with pytest.raises(ValueError), hooks.around_node("9", "X"):
        raise ValueError("other errors pass through")
    assert torch.is_grad_enabled()
