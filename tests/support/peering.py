"""kopf's namespaced peering CRD, installed for the tests that run two operators. The chart
ships the cluster-scoped one; the tests use the namespaced one so that they touch no chart CRD."""

from __future__ import annotations

from pathlib import Path

from tests.support.kube import kubectl

#: As in kopf's docs (peering.yaml).
PEERING_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: kopfpeerings.kopf.dev}
spec:
  scope: Namespaced
  group: kopf.dev
  names: {kind: KopfPeering, plural: kopfpeerings, singular: kopfpeering}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def install_peering_crd(kubeconfig: Path, workdir: Path) -> None:
    """Apply the peering CRD (idempotent) and wait until the API server serves it."""
    crd = workdir / "peering.yaml"
    crd.write_text(PEERING_CRD)
    kubectl(kubeconfig, "apply", "-f", str(crd))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/kopfpeerings.kopf.dev")
