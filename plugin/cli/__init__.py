"""``flask webhooks ...``: the plugin's command line, one module per command group.

:mod:`.commands` holds the group and the everyday commands (bots, keys, emit, worker, status,
portal links), :mod:`.db` the history database's (``flask webhooks db ...``).

May import everything below the app side's faces (the state, the layers, the ground).
"""

from __future__ import annotations

from . import db
from .commands import webhooks_cli

__all__ = ["db", "webhooks_cli"]
