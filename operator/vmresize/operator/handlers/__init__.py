"""kopf wiring, one module per resource: load, call :mod:`vmresize.operator.reconcile`, persist.

``startup`` sets the operator's kopf identity, shared clients and the metrics server.
"""
