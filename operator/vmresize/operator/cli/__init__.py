"""``kubectl vmresize``: a kubectl plugin to start, follow, confirm, revert and plan resizes.

Installed with the package as the console script ``kubectl-vmresize`` (so kubectl finds it
as ``kubectl vmresize``). Layers, held by import-linter: :mod:`.main` (arguments, exit
codes) over :mod:`.commands` over :mod:`.follow` and :mod:`.planning` (the operator's pure
scheduler over live Hosts) over :mod:`.output` (rich on a terminal, plain lines otherwise)
and :mod:`.kube`, the only module that talks to the Kubernetes API. It never imports the
kopf handlers, the reconcile engine or the operator's storage.
"""
