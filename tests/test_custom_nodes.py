"""Custom node packs: V1 and V3 packs load and run, broken packs are isolated, web folders found."""

from __future__ import annotations

import textwrap
from pathlib import Path

from executor.object_info import object_info
from executor.registry import NodeRegistry
from executor.run import Executor
from nodes.runtime.custom_loader import load_custom_nodes


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def make_packs(root: Path) -> None:
    write(
        root / "shout_pack" / "__init__.py",
        """
        from .nodes import Shout
        NODE_CLASS_MAPPINGS = {"Shout": Shout}
        NODE_DISPLAY_NAME_MAPPINGS = {"Shout": "Shout!"}
        WEB_DIRECTORY = "./js"
    """,
    )
    write(
        root / "shout_pack" / "nodes.py",
        """
        class Shout:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"text": ("STRING", {"default": "hey"})}}
            RETURN_TYPES = ("STRING",)
            FUNCTION = "go"
            OUTPUT_NODE = True
            CATEGORY = "fun"
            def go(self, text):
                return {"ui": {"text": [text.upper()]}, "result": (text.upper(),)}
    """,
    )
    write(root / "shout_pack" / "js" / "shout.js", "console.log('shout');\n")
    write(root / "broken_pack" / "__init__.py", "import a_module_that_does_not_exist\n")
    write(
        root / "single_file.py",
        """
        class Twice:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"n": ("INT", {"default": 1})}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "run"
            def run(self, n):
                return (2 * n,)
        class Broken:
            RETURN_TYPES = ("INT",)
        NODE_CLASS_MAPPINGS = {"Twice": Twice, "BrokenNode": Broken}
    """,
    )
    write(
        root / "v3_pack" / "__init__.py",
        """
        class _Schema:
            def __init__(self, **kw):
                self.__dict__.update(kw)
        class _Out:
            def __init__(self, t):
                self.t, self.display_name, self.is_output_list, self.tooltip = t, None, False, None
            def get_io_type(self):
                return self.t
        class Answer:
            @classmethod
            def define_schema(cls):
                return _Schema(node_id="Answer", inputs=[], outputs=[_Out("INT")], category="v3")
            @classmethod
            def execute(cls):
                return (42,)
        class _Extension:
            async def get_node_list(self):
                return [Answer]
        async def comfy_entrypoint():
            return _Extension()
    """,
    )
    write(root / "disabled_pack.disabled" / "__init__.py", "raise SystemExit('must not be imported')\n")


def test_packs_load_in_isolation_and_run(tmp_path, caplog):
    make_packs(tmp_path / "custom_nodes")
    registry = NodeRegistry()
    report = load_custom_nodes(tmp_path / "custom_nodes", registry)
    by_name = {p.name: p for p in report.packs}
    assert set(by_name) == {"shout_pack", "broken_pack", "single_file", "v3_pack"}
    assert "ModuleNotFoundError" in by_name["broken_pack"].error and "broken_pack" in caplog.text
    assert by_name["single_file"].nodes == ("Twice",)  # the broken node is skipped, its pack is not
    assert "BrokenNode" in caplog.text
    assert report.web_directories == {
        "shout_pack": (tmp_path / "custom_nodes" / "shout_pack" / "js").resolve()
    }
    info = object_info(registry)
    assert (
        info["Shout"]["display_name"] == "Shout!"
        and info["Shout"]["python_module"] == "custom_nodes.shout_pack"
    )
    assert info["Answer"]["category"] == "v3"
    prompt = {"1": {"class_type": "Shout", "inputs": {"text": "flux"}}}
    assert Executor(registry).run_prompt(prompt, prompt_id="x").outputs == {"1": {"text": ["FLUX"]}}


def test_missing_folder_is_fine(tmp_path):
    assert load_custom_nodes(tmp_path / "nope", NodeRegistry()).packs == []
