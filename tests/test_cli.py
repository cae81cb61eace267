"""The command line: help, headless runs, readable validation errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_main(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_help_documents_every_command_and_flag():
    out = run_main("--help")
    assert out.returncode == 0
    for word in (
        "serve",
        "run",
        "demo-models",
        "fetch-tokenizers",
        "--output-dir",
        "--input-dir",
        "--models-dir",
        "--port",
        "--listen",
        "--vram-limit",
    ):
        assert word in out.stdout, word


def test_invalid_prompt_exits_nonzero_with_one_line_per_error(tmp_path):
    workflow = tmp_path / "bad.json"
    workflow.write_text(
        json.dumps(
            {
                "1": {"class_type": "StringConcatenate", "inputs": {"string_a": "a", "delimiter": ""}},
                "2": {"class_type": "PrimitiveInt", "inputs": {"value": "many"}},
                "3": {
                    "class_type": "StringConcatenate",
                    "inputs": {"string_a": ["1", 0], "string_b": ["2", 0], "delimiter": ""},
                },
                "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
            }
        )
    )
    out = run_main("run", str(workflow), "--output-dir", str(tmp_path / "out"))
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert "error: node 1 (StringConcatenate) input 'string_b': Required input is missing: string_b" in lines
    assert any(
        line.startswith("error: node 2 (PrimitiveInt) input 'value': Failed to convert") for line in lines
    )
    assert any("node 3 (StringConcatenate) input 'string_b': Return type mismatch" in line for line in lines)
    assert len(lines) == 3


def test_run_reports_missing_file_and_runs_a_valid_workflow(tmp_path):
    out = run_main("run", str(tmp_path / "nope.json"))
    assert out.returncode != 0 and "not found" in out.stderr
    workflow = tmp_path / "ok.json"
    workflow.write_text(
        json.dumps(
            {
                "1": {"class_type": "PrimitiveString", "inputs": {"value": "flux"}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
            }
        )
    )
    out = run_main("run", str(workflow), "--output-dir", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
