"""kopf wiring, one module per resource: load, call :mod:`vmresize.operator.reconcile`, persist.

``startup`` sets the operator's kopf identity, shared clients and the metrics server.
Importing this package registers every handler (``kopf run -m vmresize.operator.handlers``).
"""

from vmresize.operator.handlers import (  # noqa: F401 - importing registers the handlers
    drain,
    host,
    host_health,
    hosttask,
    instance,
    quota,
    resize,
    startup,
    sweep,
)
