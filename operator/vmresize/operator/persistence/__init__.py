"""The operator's reads and writes of the Kubernetes API.

``storage`` is the only module that imports the Kubernetes client and translates its
errors; ``claims`` writes Host allocations and the Instance lock with optimistic concurrency.
"""
