"""The command line every generator shares (CRDs, settings, docs): write the generated files,
or with ``--check`` list the ones that drifted from their source and fail."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

Render = Callable[[Path], dict[Path, str]]
"""Every generated file of one generator, by path relative to the repository root given."""


def drift(render: Render, root: Path) -> list[str]:
    """Paths under ``root`` whose content differs from what ``render`` generates."""
    return [str(rel) for rel, text in render(root).items()
            if not (root / rel).exists() or (root / rel).read_text() != text]


def main(render: Render, *, description: str | None, source: str,
         argv: list[str] | None = None) -> int:
    """Write the files of ``render`` (``--root``, default the current directory), or with
    ``--check`` print the drifted ones, blaming ``source``, and return 1."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    parser.add_argument("--check", action="store_true", help="fail if the files drifted")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift(render, args.root)
        for path in stale:
            print(f"drifted from {source}: {path} (run `make crds`)", file=sys.stderr)
        return 1 if stale else 0
    for rel, text in render(args.root).items():
        path = args.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {rel}")
    return 0
