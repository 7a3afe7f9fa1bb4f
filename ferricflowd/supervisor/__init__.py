"""The supervisor process: spawns, reaps and recycles workers, reclaims their leases,
serves /metrics /healthz /readyz and talks to systemd (see arbiter.py)."""

from __future__ import annotations

from ferricflowd.supervisor.arbiter import HaltServer, Supervisor

__all__ = ["HaltServer", "Supervisor"]
