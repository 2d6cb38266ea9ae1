"""One module per step of a HostTask, each a plain function over one :class:`StepContext`.

``table`` maps each :class:`~vmresize.api.hosttask.TaskAction` to its step; ``context``
holds what every step is given. The steps use the files of a VM
(:mod:`vmresize.agent.vmfiles`) and the adapters below them, never the other way round.
"""
