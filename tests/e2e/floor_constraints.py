"""Print pip constraints that pin every lower bound pyproject.toml declares, for `make test-floors`.

    python tests/e2e/floor_constraints.py cpu export > constraints.txt

Reads the base dependencies and the named extras, keeps the requirements whose environment marker
holds for the running Python, and writes ``name==floor`` for each ``>=`` bound. ``--pin NAME==VERSION``
replaces a floor (torch: only its 2.13.0 CPU build is on this project's machines). Needs ``packaging``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def floor_pins(extras: list[str], pins: dict[str, str]) -> list[str]:
    """``name==version`` lines for the floors of the base dependencies and ``extras``, ``pins`` applied."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    lines = []
    for text in texts:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        name = requirement.name
        if name in pins:
            lines.append(f"{name}=={pins[name]}")
        elif floors:
            lines.append(f"{name}=={floors[0]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*")
    parser.add_argument("--pin", action="append", default=[], metavar="NAME==VERSION")
    args = parser.parse_args()
    pins = dict(pin.split("==", 1) for pin in args.pin)
    print("\n".join(floor_pins(args.extras, pins)))


if __name__ == "__main__":
    main()
