"""A decision's status patch is typed by the status model itself: every key of
:class:`StatusPatch` is a field of ``VMResizeStatus``, of the very same type, so a patch
applied by copy (no second validation) can only hold what the model would accept."""

from __future__ import annotations

from typing import get_type_hints

from vmresize.api.resize import VMResizeStatus
from vmresize.operator.decisions.vocabulary import StatusPatch

# What the engine itself writes with every decision, never a rule's patch.
ENGINES = {"phase", "reason", "message", "current_task", "pending", "conditions",
           "observed_generation", "phase_timestamps"}


def test_every_patch_key_is_a_status_field_of_the_same_type() -> None:
    hints = get_type_hints(StatusPatch)
    fields = VMResizeStatus.model_fields
    assert len(hints) >= 20   # a walk that found nothing would pass
    for name, hint in hints.items():
        assert name in fields, name
        assert hint == fields[name].annotation, (name, hint, fields[name].annotation)


def test_the_patch_and_the_engine_cover_the_status() -> None:
    assert set(get_type_hints(StatusPatch)) | ENGINES == set(VMResizeStatus.model_fields)
