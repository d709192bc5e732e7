"""What operators see: readiness (``readiness``) and the ``/healthz`` and ``/readyz`` routes
(``health``), the fleet's figures in one read (``fleet``) and the Prometheus route built on
them (``metrics``), and the log output of workers and the runnable host (``logs``).

May import: the ground, ``outbound``, ``store`` and ``delivery``; never the app side (the
state, ``control``, ``api``, ``portal``): what a route needs of the app is handed in.
"""
