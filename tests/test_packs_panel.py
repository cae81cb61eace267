"""The canvas panel (web/extensions/packs.js) run under Node with stand-ins for the frontend API and
the DOM: it registers a sidebar tab that lists loaded and failed packs from /api/fluxloom/packs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "web" / "extensions" / "packs.js"

HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
class Element {
  constructor(tag) { this.tag = tag; this.children = []; this.style = {}; this.dataset = {}; this._text = ""; }
  appendChild(child) { this.children.push(child); return child; }
  set textContent(value) { this._text = String(value); this.children = []; }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(" "); }
}
const report = JSON.parse(process.argv[3]);
const fetched = [];
const tabs = [];
const extensions = [];
globalThis.document = { createElement: (tag) => new Element(tag) };
globalThis.window = { comfyAPI: {
  app: { app: { registerExtension: (e) => extensions.push(e),
                extensionManager: { registerSidebarTab: (t) => tabs.push(t) } } },
  api: { api: { fetchApi: async (path) => { fetched.push(path);
                                            return { ok: true, json: async () => report }; } } },
} };
vm.runInThisContext(fs.readFileSync(process.argv[2], "utf8"));
(async () => {
  for (const e of extensions) if (e.setup) await e.setup();
  const root = new Element("div");
  tabs[0].render(root);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const summary = root.children.find((c) => c.dataset.fluxloomPacks === "summary");
  const rows = root.children.find((c) => c.tag === "ul").children.map((li) => li.textContent);
  console.log(JSON.stringify({ names: extensions.map((e) => e.name), tab: tabs[0].id, title: tabs[0].title,
                               fetched, summary: summary.textContent, rows,
                               badges: extensions[0].aboutPageBadges.map((b) => b.url) }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_panel_lists_loaded_and_failed_packs(tmp_path):
    report = {
        "loaded": 1,
        "failed": 1,
        "packs": [
            {
                "name": "good_pack",
                "loaded": True,
                "error": None,
                "nodes": ["A", "B"],
                "origin": "pip",
                "seconds": 0.1,
            },
            {
                "name": "bad_pack",
                "loaded": False,
                "error": "ImportError: no module named x",
                "nodes": [],
                "origin": "folder",
                "seconds": 0.0,
            },
        ],
    }
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    done = subprocess.run(
        ["node", str(harness), str(SCRIPT), json.dumps(report)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["names"] == ["Fluxloom.NodePacks"] and result["tab"] == "fluxloom-node-packs"
    assert result["fetched"] == ["/fluxloom/packs"]
    assert result["summary"] == "1 loaded, 1 failed"
    assert "good_pack" in result["rows"][0] and "2 nodes (pip" in result["rows"][0]
    assert "bad_pack" in result["rows"][1] and "ImportError: no module named x" in result["rows"][1]
    assert result["badges"] == ["/api/fluxloom/packs"]
