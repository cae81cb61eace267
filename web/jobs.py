"""The jobs API the frontend builds its queue and history panels from: list, detail, cancel."""

from __future__ import annotations

from aiohttp import web

from executor.history import JOB_STATUSES, JobQuery

from .helpers import WORKER, BadRequest, add_route, is_uuid, query_int, read_object
from .services import WebServices
from .worker import PromptWorker


class JobRoutes:
    def __init__(self, services: WebServices, worker: PromptWorker) -> None:
        self.services = services
        self.worker = worker

    async def list(self, request: web.Request) -> web.Response:
        raw_status = request.query.get("status")
        statuses = (
            tuple(s.strip() for s in raw_status.split(",") if s.strip()) if raw_status else JOB_STATUSES
        )
        limit = query_int(request, "limit", None, minimum=0)
        offset = query_int(request, "offset", 0, minimum=0)
        assert offset is not None
        try:
            query = JobQuery(
                statuses,
                limit,
                offset,
                request.query.get("workflow_id") or None,
                request.query.get("sort_by", "created_at"),
                request.query.get("sort_order", "desc"),
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        jobs, total = self.services.queue.jobs(query)
        return web.json_response(
            {
                "jobs": jobs,
                "pagination": {
                    "offset": offset,
                    "limit": limit,
                    "total": total,
                    "has_more": offset + len(jobs) < total,
                },
            }
        )

    async def detail(self, request: web.Request) -> web.Response:
        job = self.services.queue.job(request.match_info["job_id"])
        if job is None:
            return web.json_response({"error": "Job not found"}, status=404)
        return web.json_response(job)

    def _cancel(self, job_id: str) -> bool:
        if self.worker.interrupt(job_id):
            return True
        cancelled = self.services.queue.delete_pending([job_id]) > 0
        if cancelled:
            hub = self.services.hub
            hub.dispatch([hub.status_frame(self.services.queue.remaining())])
        return cancelled

    async def cancel_one(self, request: web.Request) -> web.Response:
        return web.json_response({"cancelled": self._cancel(request.match_info["job_id"])})

    async def cancel_many(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        ids = body.get("job_ids")
        if not isinstance(ids, list):
            raise BadRequest("'job_ids' must be a list of job ids")
        invalid = [i for i in ids if not is_uuid(i)]
        if invalid:
            raise BadRequest(
                "invalid job ids", body={"error": "job_ids must be UUID strings", "invalid_ids": invalid}
            )
        results = [self._cancel(i) for i in ids]
        return web.json_response({"cancelled": any(results)})


def register_job_routes(app: web.Application, services: WebServices) -> None:
    routes = JobRoutes(services, app[WORKER])
    add_route(app, "GET", "/jobs", routes.list)
    add_route(app, "POST", "/jobs/cancel", routes.cancel_many)
    add_route(app, "GET", "/jobs/{job_id}", routes.detail)
    add_route(app, "POST", "/jobs/{job_id}/cancel", routes.cancel_one)
