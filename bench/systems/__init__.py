"""The systems the bench can drive: one adapter file each (see base.py)."""

from __future__ import annotations

import importlib
from typing import Any

from bench.common import Unavailable
from bench.systems.base import System

# name -> (module, keyword arguments of its Adapter)
REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "ferricflowd": ("bench.systems.ferricflowd_adapter", {}),
    "celery": ("bench.systems.celery_adapter", {"acks_late": False}),
    "celery-acks": ("bench.systems.celery_adapter", {"acks_late": True}),
    "rq": ("bench.systems.rq_adapter", {}),
    "dramatiq": ("bench.systems.dramatiq_adapter", {}),
    # W1 with `async def` handlers (bench.handlers.noop_async): ferricflowd's event loop,
    # Dramatiq's AsyncIO middleware.
    "ferricflowd-async": ("bench.systems.ferricflowd_adapter", {"handlers": "async"}),
    "dramatiq-async": ("bench.systems.dramatiq_adapter", {"handlers": "async"}),
}
PEERS = ("celery", "celery-acks", "rq", "dramatiq")


def load(name: str, **options: Any) -> System:
    """The adapter of `name`, checked; Unavailable("why") when it cannot run here."""
    if name not in REGISTRY:
        raise Unavailable(f"unknown system {name!r} (known: {', '.join(REGISTRY)})")
    module_name, kwargs = REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Unavailable(f"cannot import {module_name}: {exc}") from exc
    system: System = module.Adapter(**{**kwargs, **options})
    system.check()
    return system
