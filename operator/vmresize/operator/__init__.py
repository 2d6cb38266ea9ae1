"""The vmresize operator: schedules resizes and drives them through agents' HostTasks.

``kopf run -m vmresize.operator`` imports this package, which registers every handler.

Module map (pure decisions at the top, plumbing below):

- :mod:`lifecycle`  the VMResize transition table (pure); its vocabulary in
  :mod:`lifecycle_types`, its rules in :mod:`transitions`
- :mod:`scheduler`  filters and weighers over plain data (pure)
- :mod:`conditions`, :mod:`tasks`, :mod:`views`, :mod:`settings`  small pure helpers
- :mod:`engine`, :mod:`instances`, :mod:`scheduling`  one step of a resize / an instance
- :mod:`claims`     Host allocations and the Instance lock (optimistic concurrency)
- :mod:`storage`    the only Kubernetes client user; typed errors in :mod:`errors`
- :mod:`driver`     the per-object daemon loop and wake-ups
- ``*_handlers``, :mod:`startup`  kopf handlers, one module per resource
- :mod:`metrics`    Prometheus
"""

from vmresize.operator.handlers import (  # noqa: F401 - importing registers the handlers
    host,
    host_health,
    hosttask,
    instance,
    resize,
    startup,
    sweep,
)
