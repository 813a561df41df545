"""Dataset layouts: each reads labels, methods and identities from one dataset's folder structure."""

from __future__ import annotations

import logging
from pathlib import Path

from dfguard.ingest.layouts import celebdf, demo, dfdc, ffpp, generic
from dfguard.ingest.layouts.base import Layout, Parsed

log = logging.getLogger(__name__)

# Detection order matters: the demo corpus is FaceForensics++-shaped and only its index tells it apart.
LAYOUTS: dict[str, Layout] = {
    layout.name: layout for layout in (demo.LAYOUT, ffpp.LAYOUT, celebdf.LAYOUT, dfdc.LAYOUT, generic.LAYOUT)
}


def resolve_layout(root: Path, name: str) -> Layout:
    """The layout called `name`, or for "auto" the first whose marker files are in `root`."""
    if name != "auto":
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}; expected auto or one of {', '.join(LAYOUTS)}")
        if not LAYOUTS[name].matches(root):
            log.warning("%s does not look like a %s dataset; ingesting it as one anyway", root, name)
        return LAYOUTS[name]
    for layout in LAYOUTS.values():
        if layout.matches(root):
            log.info("%s looks like a %s dataset", root, layout.name)
            return layout
    looked_for = "; ".join(f"{layout.name}: {layout.signature}" for layout in LAYOUTS.values())
    raise ValueError(f"{root} matches no known dataset layout (looked for {looked_for})")


__all__ = ["LAYOUTS", "Layout", "Parsed", "resolve_layout"]
