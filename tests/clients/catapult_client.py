"""Runs one API prompt through a Fluxloom server with comfy-catapult and prints the history entry as JSON.

Usage (in the environment comfy-catapult is installed in): catapult_client.py URL PROMPT.json NODE_ID
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from comfy_catapult.api_client import ComfyAPIClient
from comfy_catapult.catapult import ComfyCatapult


async def run(url: str, prompt: dict, important: str) -> dict:
    async with ComfyAPIClient(url) as client, ComfyCatapult(comfy_client=client, debug_path=None) as catapult:
        return await catapult.Catapult(
            job_id=str(uuid.uuid4()), prepared_workflow=prompt, important=[important]
        )


if __name__ == "__main__":
    url, prompt_path, node_id = sys.argv[1:4]
    with open(prompt_path, encoding="utf-8") as handle:
        prompt = json.load(handle)
    history = asyncio.run(run(url, prompt, node_id))
    print(json.dumps(history, default=str))
