"""The delivery loop: claim due work, fan events out to the endpoints that want them, send,
record each batch of results, schedule retries; the RQ job that runs it and the worker process
(no Flask).

``pump`` is the loop of one job, made of ``claims`` (claiming and fan-out) and ``results``
(recording); ``engine`` feeds a worker process's sender and
``dispatch_policy`` decides, as pure code, what each receiver host may have in flight;
``retry`` the schedule, ``attempt_log`` the WARNING lines, ``work`` what the loop carries;
``enqueue`` starts a job by its path, ``jobs`` is that job, ``worker`` the process.

May import: the ground, ``outbound`` and ``store``.
"""
