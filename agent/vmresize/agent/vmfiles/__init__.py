"""The files of a VM under the storage root, and nothing else: disks and their chains
(``disks``), what a move captures, sends and verifies (``moving``), pre-copy's overlays
(``overlays``), a flavor's own disks (``flavorfiles``), the records kept beside a disk
(``markers``) and the shared-storage marker (``sharedstore``).

The steps (:mod:`vmresize.agent.steps`) use these; they use only the hypervisor's pure
helpers, the transfer seam and the paths below them, never a step.
"""
