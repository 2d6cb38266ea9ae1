"""Operator start-up: kopf identity and settings, shared clients, the metrics server.

The operator's kopf identity is its own (the agent has another): finalizer
``operator.vmresize.io/finalizer``, progress and diff-base annotations under
``operator.vmresize.io``, peering ``vmresize-operator`` (ignored with ``--standalone``).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from vmresize.api.envsettings import SettingsError
from vmresize.operator import metrics
from vmresize.operator.handlers.memo import Shared, put
from vmresize.operator.persistence.hostview import HostView
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile.driver import Locks, Wakeups
from vmresize.operator.settings import Settings

PREFIX = "operator.vmresize.io"
FINALIZER = f"{PREFIX}/finalizer"
PEERING = "vmresize-operator"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Set kopf's identity (finalizer, annotations, peering) and tuning, read the settings
    (PermanentError if invalid) and put Storage (with its Host view), Wakeups and settings
    into the memo; start the metrics server."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    if settings.peering.name == "default":
        # Not named on the command line: use ours, and if kopf's peering CRD is absent run
        # alone (a named --peering stays mandatory, so HA never silently degrades).
        settings.peering.name = PEERING
        settings.peering.mandatory = False
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 32
    settings.watching.server_timeout = 120
    try:
        conf = Settings.from_env()
    except SettingsError as e:  # permanent: kopf stops instead of retrying the start-up
        raise kopf.PermanentError(str(e)) from None
    settings.peering.lifetime = conf.peering_lifetime_seconds
    view = HostView()
    put(memo, Shared(settings=conf, storage=Storage(view=view), wakeups=Wakeups(),
                     locks=Locks(), hosts=view))
    metrics.serve(conf.metrics_port, conf.metrics_address)
