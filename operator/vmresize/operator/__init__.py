"""The vmresize operator: schedules resizes and drives them through agents' HostTasks.

Layers, pure at the bottom (import-linter keeps them so):

- :mod:`.decisions`    the VMResize transition table, the scheduler, tasks, conditions (pure)
- :mod:`.persistence`  the only Kubernetes client user: storage and the claims
- :mod:`.reconcile`    one step of a resize, an instance or a host; the per-object driver
- :mod:`.handlers`     kopf wiring, one module per resource; importing it registers them
- :mod:`.cli`          the ``kubectl vmresize`` plugin (no kopf, no handlers)
- :mod:`.settings`, :mod:`.errors`, :mod:`.metrics`

Importing this package registers nothing, so that the plugin starts without kopf:
``kopf run -m vmresize.operator.handlers`` or ``vmresize-operator`` run the operator.
"""
