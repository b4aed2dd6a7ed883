"""Durable event intake on the lane (ingress/transport/lane.py): `POST <events.path>/…`
answered without the ASGI request cycle, the path a producer's events take.

The steps, their order and their answers are the ASGI path's (`IngressApp._http` and
`_event`): the same head, access log, metrics and span; admission; the intake's
policies; the body limit and JSON depth; security headers; `EventIntake.answer`. Only
the plumbing differs: the body comes from the parser callbacks and the response goes out
in one write. A request the lane does not claim (another method, a path an endpoint
serves, `Expect: 100-continue`) takes the ASGI path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingress.request import Refused, RequestHead, read_head
from ingress.responses import Headers, problem_parts
from ingress.transport.lane import LaneCycle

if TYPE_CHECKING:
    from ingress.app import IngressApp


class EventLane:
    __slots__ = ("app", "served")

    def __init__(self, app: IngressApp) -> None:
        self.app = app
        self.served = 0  # requests answered here (the others took the ASGI path)

    def claims(self, method: bytes, url: bytes) -> bool:
        intake = self.app.events
        if intake is None or method != b"POST" or not url.startswith(intake.raw_prefix):
            return False
        endpoints = self.app.endpoints  # exact paths the gateway serves itself come first
        return not endpoints or url.partition(b"?")[0].decode("latin-1") not in endpoints

    async def serve(self, cycle: LaneCycle) -> None:
        app = self.app
        app.stats.requests += 1
        self.served += 1
        head = read_head(cycle.scope, app.bus.pending, app.proxies)
        watch = app.telemetry.start(head)
        try:
            try:
                status, headers, body, extra = await self._answer(head, cycle)
            except Refused as problem:
                status = problem.status
                headers, body = problem_parts(
                    status, problem.slug, problem.title, problem.detail, head.cid,
                    instance=head.path,
                )  # fmt: skip
                extra = problem.headers
                security = app.table.security
                if security is not None:
                    extra = [*extra, *security.own(head.scheme)]
            watch.status = status
            watch.bytes = len(body)
            await cycle.writable()
            cycle.respond(status, headers, body, extra)
        finally:
            watch.finish()

    async def _answer(
        self, head: RequestHead, cycle: LaneCycle
    ) -> tuple[int, Headers, bytes, Headers]:
        app = self.app
        intake = app.events
        if intake is None or not head.path.startswith(intake.prefix):
            # Claimed just before a reload that took the intake away.
            raise Refused(
                503,
                "reloading",
                "Reloading",
                "the event intake was reconfigured while this event arrived; send it again",
                [(b"retry-after", app.retry_after)],
            )
        admission = app.admission
        if admission is None:
            return await app.answer_event(intake, head, cycle.read_body)
        await app.enter(admission, head)
        try:
            return await app.answer_event(intake, head, cycle.read_body)
        finally:
            admission.leave()
