"""One step of one object: snapshot, decide (:mod:`vmresize.operator.decisions`), record, act.

``engine`` drives a VMResize, ``instances`` an Instance, ``scheduling`` places a resize and
claims atomically, ``driver`` is the loop behind each per-object daemon.
"""
