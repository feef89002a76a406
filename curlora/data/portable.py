"""The files a study reads, made to travel with its pack: recorded where they were and what they held, found again
on the machine that unpacks it.

A study's config names its task CSVs and its perplexity text by the absolute paths they had where it started
(`ExperimentConfig.load` resolves a YAML's relative paths): a checkout in /work/wt-frontier on one machine is
/work/main, or a Space's /home/user/app, on the next. `pack` records each file (`PackedFile`: the path as the config
names it, its path under the project's folder where it lay inside it, its sha256); `unpack` gives each path that does
not exist on this machine to `relocate`, which looks for the same file under this project's folder and the folder
above it (where ../shared sits beside a clone): the recorded project path first, then the recorded path's tails,
longest first, two parts at least. Where the pack recorded a sha256, a candidate must hold exactly those bytes (the
seed's rows are drawn from the file, so a different file would make different runs); a pack made before hashes were
recorded accepts the first candidate and says its content was not checked. A file found nowhere stays as recorded:
the study's finished runs unpack all the same, and resuming names the missing file.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from curlora.paths import REPO, sources, within

MIN_TAIL = 2  # a tail of one part ("train.csv") names too many files to be the one recorded


@dataclass
class PackedFile:
    """One file a packed study reads: the path its config names, that path under the project folder of the machine
    that packed it (None outside it), and the sha256 of its bytes there (None where it was not readable)."""
    recorded: str
    project: str | None = None
    sha256: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, data: dict) -> "PackedFile":
        return cls(str(data["recorded"]), data.get("project"), data.get("sha256"))


@dataclass
class Relocation:
    """What unpack did with one recorded path: found it (`found`, checked by sha256 or not) or not (found None)."""
    recorded: str
    found: str | None
    checked: bool

    def sentence(self) -> str:
        if self.found is None:
            return f"{self.recorded} is not on this machine: put it there before resuming"
        return f"{self.recorded} → {self.found}" + ("" if self.checked else " (content not checked: the pack has no "
                                                                                "sha256 for it)")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_paths(cfg) -> list[str]:
    """The local files a config reads (task CSVs, the probe text), each once, in order; bundled or uploaded names
    and empty fields left out."""
    out: list[str] = []
    for obj, key, _ in sources(cfg):
        value = getattr(obj, key)
        if value and Path(value).is_absolute() and value not in out:
            out.append(value)
    return out


def describe(path: str, project: Path | None = None) -> PackedFile:
    """A file as a pack records it, read on this machine (`project`: the project's folder, REPO unless given)."""
    p = Path(path)
    resolved, root = p.resolve(), (project or REPO).resolve()
    under = str(resolved.relative_to(root)) if within(resolved, root) else None
    return PackedFile(path, under, sha256(p) if p.is_file() else None)


def candidates(packed: PackedFile, project: Path):
    """Where this machine may hold a recorded file: its project path under this project, then the recorded path's
    tails (longest first, MIN_TAIL parts at least) under this project and under the folder above it."""
    if packed.project:
        yield project / packed.project
    parts = Path(packed.recorded).parts[1:]  # without the root
    for k in range(len(parts) - MIN_TAIL + 1):
        tail = Path(*parts[k:])
        for base in (project, project.parent):
            yield base / tail


def relocate(packed: PackedFile, project: Path | None = None) -> Relocation:
    """Find a recorded file on this machine (see the module's docstring); the recorded path itself when it exists.
    `project`: this project's folder, REPO unless given."""
    if Path(packed.recorded).is_file():
        return Relocation(packed.recorded, packed.recorded, True)
    seen: set[Path] = set()
    for c in candidates(packed, project or REPO):
        c = c.resolve()
        if c in seen or not c.is_file():
            continue
        seen.add(c)
        if packed.sha256 is None:
            return Relocation(packed.recorded, str(c), False)
        if sha256(c) == packed.sha256:
            return Relocation(packed.recorded, str(c), True)
    return Relocation(packed.recorded, None, False)


def rewrite(cfg, moved: dict[str, str]) -> bool:
    """Point a config's file fields at their new paths (`moved`: recorded → found); True where one changed."""
    changed = False
    for obj, key, _ in sources(cfg):
        value = getattr(obj, key)
        if value in moved and moved[value] != value:
            setattr(obj, key, moved[value])
            changed = True
    return changed
