"""Moving disks between hosts: the asyncssh migration service and its client.

``server`` (the SSH policy and the registry of expected transfers) and ``session`` (one
incoming stream) receive; ``client`` sends, reading the disk through ``source``;
``protocol`` is the wire format and the receiver's sidecar state; ``sparse`` reads and
writes sparse files and defines the disk checksum; ``gcm`` trims copies from asyncssh's
AES-GCM packets; ``keys`` holds the SSH keys; ``translate`` maps asyncssh errors onto
:mod:`vmresize.agent.errors`; ``seam`` is the interface the executor sees and ``service``
its one real adapter.
Independent of :mod:`vmresize.agent.hypervisor`.
"""
