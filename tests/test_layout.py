"""The package's parts import one way (docs/architecture.md): this test reads every module's imports,
function-level ones included, and fails on any import against the direction."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lockgate

#: What each core part may import from lockgate besides its own modules and the private top-level
#: modules every part may use (``lockgate._errors``, ``_config``, ``_threads``, ``_processes``).
ALLOWED: dict[str, set[str]] = {
    "mailbox": set(),
    "snapshots": set(),
    "state": {"snapshots"},
    "savepoint": {"state", "snapshots"},
    "checkpointing": {"snapshots", "mailbox"},
    "eventtime": {"state", "snapshots"},
    "cli": {"savepoint", "state", "snapshots"},
    "ray_runner": {
        "actors",
        "observe",
        "graph",
        "checkpointing",
        "mailbox",
        "connectors",
        "functions",
        "eventtime",
        "state",
        "snapshots",
        "savepoint",
    },
    "observe": {
        "graph",
        "checkpointing",
        "mailbox",
        "connectors",
        "functions",
        "eventtime",
        "state",
        "snapshots",
    },
}

#: Parts nothing inside the package may import, but the top-level face.
OUTERMOST = {"api", "testing", "cli"}


def part_of(module: str) -> str | None:
    """The part a module of lockgate belongs to (``lockgate.state._heap`` -> ``state``); None for the
    top-level face and the private top-level modules."""
    names = module.split(".")
    if len(names) < 2 or names[1].startswith("_"):
        return None
    return names[1]


def module_name(root: Path, path: Path) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    names = list(relative.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """Every lockgate module that the file at ``path`` (module ``module``) imports, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "lockgate":  # `from lockgate import state`: each name is a module or a face
                found += [(node.lineno, f"lockgate.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "lockgate" or name.startswith("lockgate.")]


def violations(root: Path) -> list[str]:
    """Every import under the package directory ``root`` against the one-way rules."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(root, path)
        source = part_of(module)
        if source is None:
            continue
        for line, target in imported_modules(path, module):
            where = f"{path.relative_to(root.parent)}:{line}: {module} imports {target}"
            destination = part_of(target)
            if target == "lockgate":
                found.append(f"{where} (the top-level face: import the part itself)")
            elif destination is None or destination == source:
                continue
            elif destination in OUTERMOST and source != "testing":
                found.append(f"{where} ({destination} is outermost: nothing in the package uses it)")
            elif source in ALLOWED and destination not in ALLOWED[source]:
                allowed = ", ".join(sorted(ALLOWED[source])) or "no other part"
                found.append(f"{where} ({source} may import {allowed})")
    return found


def test_parts_import_one_way() -> None:
    root = Path(lockgate.__file__).parent
    assert violations(root) == []


def test_every_core_part_exists() -> None:
    root = Path(lockgate.__file__).parent
    missing = [part for part in ALLOWED if not (root / part / "__init__.py").is_file()]
    assert missing == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "lockgate"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_planted_forbidden_import_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "mailbox/__init__.py": "",
            "mailbox/_channel.py": "def f():\n    from lockgate.state import KeyGroupRange\n",
            "state/__init__.py": "",
            "state/_heap.py": "from ..actors import _actor\nfrom lockgate import snapshots\n",
            "snapshots/__init__.py": "from lockgate._errors import CheckpointError\n",
            "checkpointing/_coordinator.py": "import lockgate.actors._actor\n",
            "savepoint/_format.py": "from lockgate import api\n",
            "cli/_main.py": "from lockgate.savepoint import Savepoint\nfrom lockgate.actors import Job\n",
            "graph/_describe.py": "import lockgate.cli\n",
        },
    )
    found = violations(root)
    assert [entry.split(": ")[0] for entry in found] == [
        "lockgate/checkpointing/_coordinator.py:1",
        "lockgate/cli/_main.py:2",
        "lockgate/graph/_describe.py:1",
        "lockgate/mailbox/_channel.py:2",
        "lockgate/savepoint/_format.py:1",
        "lockgate/state/_heap.py:1",
    ]
    assert "cli may import savepoint, snapshots, state" in found[1]
    assert "cli is outermost" in found[2]
    assert "mailbox may import no other part" in found[3]
    assert "state may import snapshots" in found[5]


def test_the_maps_name_only_files_that_exist() -> None:
    """docs/architecture.md and docs/checkpointing.md name modules by path: each must exist, so a move
    that forgets the map fails here."""
    package = Path(lockgate.__file__).parent
    docs = package.parent / "docs"
    missing = []
    for page in ("architecture.md", "checkpointing.md"):
        text = (docs / page).read_text(encoding="utf-8")
        for path in re.findall(r"`((?:lockgate/)?[a-z_]+/[a-z_/]*(?:\.py|/))`", text):
            relative = path.removeprefix("lockgate/")
            if relative.split("/")[0] in {"tests", "docs", "examples", "benchmarks"}:
                continue
            if not (package / relative).exists():
                missing.append(f"{page}: {path}")
    assert missing == []
