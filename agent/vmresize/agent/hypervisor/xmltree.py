"""Domain XML as a tree, namespaces kept as written, and the difference of two definitions.

:func:`parse` and :func:`serialize` keep every foreign namespace prefix and declaration as
it was written (``ns0`` included), with no global prefix registry; :func:`flatten` and
:func:`diff` name each value by a stable path (a disk by target, a NIC by MAC), so a test
can say the changed set is exactly the expected one. Used by :mod:`.domainxml`, which
re-exports all four (pure: no I/O, no libvirt).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from typing import cast

from vmresize.agent.errors import InvalidDomainConfigError

XML_NS = "http://www.w3.org/XML/1998/namespace"


def parse(xml: str) -> ET.Element:
    """The definition as an element tree; not XML is an :class:`InvalidDomainConfigError`.

    Names in a namespace (metadata written by other tools, ``<qemu:commandline>``) are
    kept exactly as written, prefix and declarations included: each becomes the literal
    name ``prefix:local``, and each ``xmlns`` declaration an attribute of the element that
    made it, so serializing needs no global prefix registry. ElementTree's own registry
    refuses prefixes such as ``ns0`` (the ones ElementTree itself writes) and is shared
    by every thread of the process.
    """
    parser: ET.XMLPullParser[ET.Element | tuple[str, str]] = ET.XMLPullParser(
        events=("start-ns", "start", "end"))
    try:
        parser.feed(xml)
        parser.close()
    except ET.ParseError as e:
        raise InvalidDomainConfigError(f"domain definition is not XML: {e}") from e
    root: ET.Element | None = None
    scopes: list[list[tuple[str, str]]] = []  # declarations in force, innermost last
    declared: list[tuple[str, str]] = []
    for event in parser.read_events():
        kind, item = cast("tuple[str, object]", event)  # start-ns, start and end carry one
        if kind == "start-ns":
            declared.append(cast("tuple[str, str]", item))
        elif kind == "start":
            el = cast("ET.Element", item)
            root = el if root is None else root
            scopes.append(declared)
            for prefix, uri in declared:
                el.set(f"xmlns:{prefix}" if prefix else "xmlns", uri)
            declared = []
            el.tag = _qname(el.tag, scopes, attribute=False)
            for key in [k for k in el.attrib if k.startswith("{")]:
                el.set(_qname(key, scopes, attribute=True), el.attrib.pop(key))
        else:
            scopes.pop()
    if root is None:
        raise InvalidDomainConfigError("domain definition is empty")
    return root


def _qname(name: str, scopes: list[list[tuple[str, str]]], *, attribute: bool) -> str:
    """``{uri}local`` as the source wrote it, with the innermost prefix bound to ``uri``
    (an attribute needs a prefix: unprefixed attributes are in no namespace)."""
    if not name.startswith("{"):
        return name
    uri, local = name[1:].split("}", 1)
    if uri == XML_NS:
        return f"xml:{local}"
    seen: set[str] = set()
    for scope in reversed(scopes):
        for prefix, bound in reversed(scope):
            if prefix in seen:
                continue  # shadowed by an inner declaration of the same prefix
            seen.add(prefix)
            if bound == uri and (prefix or not attribute):
                return f"{prefix}:{local}" if prefix else local
    raise InvalidDomainConfigError(f"no namespace prefix in scope for {name}")


def serialize(dom: ET.Element) -> str:
    """A tree from :func:`parse` as XML text, prefixes and declarations as they were."""
    return ET.tostring(dom, encoding="unicode")


# --- comparison -----------------------------------------------------------------------------

def _key(el: ET.Element) -> str | None:
    """A stable identity for repeated devices: a disk by target, a NIC by MAC."""
    if el.tag == "disk":
        t = el.find("target")
        return t.get("dev") if t is not None else None
    if el.tag == "interface":
        m = el.find("mac")
        return m.get("address") if m is not None else None
    return None


def _flatten(el: ET.Element, path: str, out: dict[str, str]) -> None:
    out[path or "."] = (el.text or "").strip()
    for k, v in el.attrib.items():
        out[f"{path}@{k}"] = v
    counts = Counter(c.tag for c in el)
    index: Counter[str] = Counter()
    for child in el:
        key = _key(child)
        label = child.tag
        if key is not None:
            label = f"{child.tag}[{key}]"
        elif counts[child.tag] > 1:
            label = f"{child.tag}[{index[child.tag]}]"
        index[child.tag] += 1
        _flatten(child, f"{path}/{label}" if path else label, out)


def flatten(xml: str) -> dict[str, str]:
    """Every element's text and attribute by path (``devices/disk[vda]/source@file``)."""
    out: dict[str, str] = {}
    _flatten(parse(xml), "", out)
    return out


def diff(before: str, after: str) -> set[str]:
    """Paths whose value differs, or that exist on one side only."""
    a, b = flatten(before), flatten(after)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
