"""Starting a delivery job: one RQ job of :func:`chatbot_webhooks.delivery.jobs.pump`, named
by its dotted path.

By the path, not the function object: whoever starts a job (``emit``, the worker's ticker, a
job that hands over) need not import the delivery loop, and the delivery loop can start its
successor without importing the jobs module that imports it. The path is the contract between
the processes that enqueue and the workers that run the job: it changes only with a way for a
running fleet to upgrade. It moved once, when the delivery loop got a package of its own
(0.2): workers still run jobs queued under the old path (:data:`LEGACY_PUMP_JOBS`, mapped by
:class:`chatbot_webhooks.delivery.worker.DeliveryJob`), so upgrade the workers first, then the
web processes.
"""

from __future__ import annotations

from rq import Queue

from ..config import Settings

#: The RQ job that runs the delivery loop, as workers import it (a contract).
PUMP_JOB = "chatbot_webhooks.delivery.jobs.pump"

#: Paths the same job had before, still queued by processes of an older release; workers run
#: them as :data:`PUMP_JOB`.
LEGACY_PUMP_JOBS = frozenset({"chatbot_webhooks.jobs.pump"})


def enqueue_pump(queue: Queue, settings: Settings, pump_id: str) -> None:
    queue.enqueue_call(
        PUMP_JOB,
        args=(settings.to_job_dict(), pump_id),
        job_id=pump_id,
        timeout=int(settings.pump_max_seconds + settings.timeout + 60),
        result_ttl=0,
        failure_ttl=7 * 86400,
        description=f"webhook deliveries ({pump_id})",
    )
