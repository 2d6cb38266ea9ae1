"""The agent's one error tree: every error the agent raises is an :class:`AgentError`.

Like asyncssh's ``misc.py``, the whole tree lives in this module, the agent's bottom layer,
so every other module can raise and catch any of it without importing upward. It imports
no third-party library: errors of asyncssh, libvirt and the Kubernetes client are
translated in their adapters (``transfer.translate``, ``hypervisor.libvirt_adapter``,
``kube.client``) and chained with ``raise ... from e``, so nothing above an adapter ever
sees a foreign exception. Every error says whether retrying the same step can help
(``retryable``: a class default, overridable per instance), in the spirit of kopf's
``TemporaryError``/``PermanentError``.

Tree (``retryable`` default in brackets)::

    AgentError                          base; retryable per instance             [no]
    ├── TransferError                   moving a disk over SSH (transfer/)       [no]
    │   ├── PathEscapeError             a path would leave the storage root      [no]
    │   ├── HostKeyError                pinned host key mismatch / bad key       [no]
    │   ├── AuthRejectedError           our client key was refused               [no]
    │   ├── TransferRefusedError        receiver refused the transfer            [no]
    │   │   └── TransferBusyError       receiver is verifying it; ask later      [no]
    │   ├── TransferChecksumMismatchError receiver's checksum differs from ours  [yes]
    │   └── ConnectionLostError         network/SSH failure mid-transfer         [yes]
    ├── HypervisorError                 a libvirt call failed (hypervisor/)      [no]
    │   ├── DomainNotFoundError         no domain of that name                   [no]
    │   ├── DomainExistsError           another domain holds the name/UUID       [no]
    │   ├── InvalidDomainConfigError    definition or size change refused        [no]
    │   ├── OperationInvalidError       not valid in the current state           [yes]
    │   ├── HypervisorUnreachableError  connection broken or not opened          [yes]
    │   └── NoGuestAgentError           the domain has no guest agent channel    [no]
    ├── DiskError                       qemu-img or a disk file failed (disks)   [no]
    ├── KubeError                       a Kubernetes API call failed (kube/)     [no]
    │   ├── KubeNotFoundError           404                                      [no]
    │   ├── KubeConflictError           409, the object changed under us         [yes]
    │   ├── KubeAlreadyExistsError      409 AlreadyExists on create              [no]
    │   ├── KubeUnavailableError        no answer, 408, 429, 5xx                 [yes]
    │   └── KubeRejectedError           any other 4xx                            [no]
    ├── ProbeFailedError                one health probe did not pass (health)   [yes]
    └── StepError                       a HostTask step failed (steps/)          [no]
        ├── TaskRefusedError            not for this host / missing fields       [no]
        │   └── TaskUnreadableError     a field or value this agent does not know [no]
        ├── UnmovableError              the VM has what cannot be copied         [no]
        ├── FlavorRefusedError          the definition cannot take the flavor    [no]
        ├── CopyChecksumMismatchError   received disk is not the source disk     [no]
        ├── ChecksumStalledError        a checksum read nothing for too long     [yes]
        ├── InsufficientSpaceError      disk's filesystem cannot hold it         [yes]
        ├── FencedError                 the owner no longer names this task      [no]
        └── HealthCheckFailedError      no probe passed by the deadline          [no]

The ``Kube*`` leaves follow :class:`vmresize.api.apierrors.ApiErrorKind`, the one
classification of Kubernetes API errors the operator shares.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every agent error; ``retryable`` says whether a retry of the step can help."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


# --- transfer: moving a disk between hosts over SSH -------------------------------------


class TransferError(AgentError):
    """A disk transfer (or the path, key and session handling around it) failed."""


class PathEscapeError(TransferError):
    """A relative path is absolute, contains ``..``/NUL, or resolves outside the root."""


class HostKeyError(TransferError):
    """The receiver's host key does not match the pinned one (or the pin is malformed)."""


class AuthRejectedError(TransferError):
    """The receiver refused our client key."""


class TransferRefusedError(TransferError):
    """The receiver refused the transfer (unknown id, size mismatch, bad request)."""


class TransferBusyError(TransferRefusedError):
    """The transfer is being verified right now; the sender should come back later."""


class TransferChecksumMismatchError(TransferError):
    """The receiver's disk checksum of what it wrote differs from the source's (resent once)."""

    retryable = True


class ConnectionLostError(TransferError):
    """The SSH connection failed or dropped; resuming from the receiver's state can help."""

    retryable = True


class ProbeFailedError(AgentError):
    """One probe of a HealthCheck did not pass; the next one may (the message says what it
    saw). Never leaves the HealthCheck step: the deadline turns it into HealthCheckFailedError."""

    retryable = True


# --- hypervisor: libvirt -----------------------------------------------------------------


class HypervisorError(AgentError):
    """A hypervisor call failed; adapters decide ``retryable`` from the library's code."""


class DomainNotFoundError(HypervisorError):
    """No domain of that name is defined."""


class DomainExistsError(HypervisorError):
    """A different domain already holds that name or UUID."""


class InvalidDomainConfigError(HypervisorError):
    """The hypervisor refused the domain definition or a size change."""


class OperationInvalidError(HypervisorError):
    """The operation is not valid in the domain's current state (e.g. start while running)."""

    retryable = True


class HypervisorUnreachableError(HypervisorError):
    """The connection to the hypervisor is broken or could not be opened."""

    retryable = True


class NoGuestAgentError(HypervisorError):
    """The domain defines no QEMU guest agent channel, so nothing can answer guest-ping."""


# --- disk: qcow2 files under the storage root --------------------------------------------


class DiskError(AgentError):
    """A disk operation failed (a tool timing out or not starting is retryable)."""


# --- kube: the Kubernetes API ------------------------------------------------------------


class KubeError(AgentError):
    """A Kubernetes API call failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, retryable: bool | None = None,
                 status: int | None = None) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status


class KubeNotFoundError(KubeError):
    """The object does not exist (404)."""


class KubeConflictError(KubeError):
    """The object changed under us (409); re-read and try again."""

    retryable = True


class KubeAlreadyExistsError(KubeError):
    """A create found the object there already (409 ``AlreadyExists``)."""


class KubeUnavailableError(KubeError):
    """The API server did not answer, or answered 408, 429 or 5xx; try again later."""

    retryable = True


class KubeRejectedError(KubeError):
    """The API server refused the request as invalid or forbidden; retrying will not help."""


# --- step: one HostTask step (executor) --------------------------------------------------


class StepError(AgentError):
    """A step failed; ``retryable`` says whether running it again can succeed."""


class TaskRefusedError(StepError):
    """The task is not for this host, or is missing what its action needs."""


class TaskUnreadableError(TaskRefusedError):
    """The task does not parse here: a newer operator wrote a field or value this agent
    does not know (version skew). Never retried: the same agent would read it the same way;
    the task fails at once so that the operator moves on (issue 18, finding 7)."""

    def __init__(self, message: str, *, phase: str | None = None) -> None:
        super().__init__(message, retryable=False)
        #: The task's ``status.phase`` as far as it could be read (a finished task is left).
        self.phase = phase


class UnmovableError(StepError):
    """The VM has something that cannot be copied to another host (passthrough, a disk
    outside the storage root, a disk type or format it cannot copy); refused before any
    power-off, nothing was done."""


class FlavorRefusedError(StepError):
    """The target flavor cannot be applied to the VM's definition (vCPUs it cannot spread
    over its NUMA cells, memory below its RAM devices or not in whole huge pages, ...);
    refused before any power-off, nothing was done."""


class CopyChecksumMismatchError(StepError):
    """The received disk is not the source disk (Finish refuses to start it)."""


class ChecksumStalledError(StepError):
    """A checksum read nothing for too long (a failing or hung disk); the step ends."""

    retryable = True


class InsufficientSpaceError(StepError):
    """The filesystem the disk lands on cannot hold the incoming disk."""

    retryable = True


class FencedError(StepError):
    """The owner's status no longer names this task: a destructive act is refused
    (permanent: a later decision is a new task)."""


class HealthCheckFailedError(StepError):
    """A HealthCheck saw no passing probe by its deadline (or cannot pass at all: no guest
    agent channel, the VM is not running); the message carries the last probe's error."""
