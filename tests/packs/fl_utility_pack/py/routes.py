"""Routes added at import time: through the route table and through the app itself."""

import folder_paths
from aiohttp import web
from server import PromptServer

routes = PromptServer.instance.routes


@routes.get("/fl_utility/checkpoints")
async def checkpoints(request: web.Request) -> web.Response:
    return web.json_response(folder_paths.get_filename_list("checkpoints"))


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"echo": request.query.get("text", "")})


PromptServer.instance.app.router.add_get("/fl_utility/echo", echo)


def stamp(json_data: dict) -> dict:
    """An on-prompt handler: fills "$stamp" texts before the prompt is validated (rgthree's seeds work so)."""
    for node in (json_data.get("prompt") or {}).values():
        if isinstance(node, dict) and node.get("inputs", {}).get("text") == "$stamp":
            node["inputs"]["text"] = "stamped"
    return json_data


PromptServer.instance.add_on_prompt_handler(stamp)
