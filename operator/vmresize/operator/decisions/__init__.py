"""The operator's pure decisions: no Kubernetes client, no kopf, no clock of their own.

``lifecycle`` (the transition table) over ``vocabulary`` (its types) and ``transitions``
(one rule per entry); ``scheduler`` (filters and weighers over plain data); ``tasks``
(building HostTasks); ``conditions`` (what ``kubectl wait`` sees); ``views`` (API models to
the plain data the others decide on).
"""
