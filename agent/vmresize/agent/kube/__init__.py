"""The agent's side of Kubernetes: its API client, Host registration and kopf handlers.

``client`` is the only module that imports the Kubernetes client; ``registration`` keeps
the Host object and its heartbeat; ``handlers`` runs HostTasks through the executor.
"""
