"""The hypervisor seam: the ``Hypervisor`` protocol and its libvirt adapter.

``protocol`` is what the executor sees; ``libvirt_adapter`` is the one real implementation
(and the only module that imports libvirt, with ``embedded`` for the embedded QEMU driver's
process plumbing). Independent of :mod:`vmresize.agent.transfer`.
"""
