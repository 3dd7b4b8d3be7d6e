"""What ``rgct data check`` reports for the other datasets' folders, which layout a folder has,
and which tasks a folder of each layout gives samples for.

Example::

    layout = detect_layout("/data/deeplesion")      # 'deeplesion'
    check_layout_tasks(["lesion"], layout, "/data/deeplesion")
    report = check_source("/data/deeplesion", layout)
    print(format_source_report(report))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rgct.constants import CXR_TASKS, LESION_TASKS, RADCHEST_TASKS, RADGENOME_TASKS
from rgct.data.check import format_problems
from rgct.data.io import DataError
from rgct.data.records import Problem

LAYOUTS = ("radgenome", "rad-chestct", "deeplesion", "vindr-cxr", "chestxray14")
"""Dataset layouts rgct reads (``--layout`` of ``rgct synth`` and ``rgct data check``)."""

LAYOUT_TASKS = {
    "radgenome": RADGENOME_TASKS,
    "rad-chestct": RADCHEST_TASKS,
    "deeplesion": LESION_TASKS,
    "vindr-cxr": CXR_TASKS,
    "chestxray14": CXR_TASKS,
}
"""Layout -> the tasks a folder of that layout gives samples for."""


def error(problems: list[Problem], kind: str, where: str, message: str) -> None:
    """Append an error ``Problem`` whose message starts with ``where``."""
    problems.append(Problem("error", kind, where, f"{where}: {message}"))


@dataclass
class SourceReport:
    """What a check of a non-RadGenome dataset folder found (``rgct data check``).

    Attributes:
        root: the folder. layout: one of :data:`LAYOUTS` but 'radgenome'.
        counts: split -> name -> count, for the summary table.
        problems: every problem, in the order found.
    """

    root: str
    layout: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def start(cls, root: str | Path, layout: str) -> SourceReport:
        """An empty report of ``root``, holding a ``missing_folder`` error when it is no folder."""
        report = cls(str(root), layout)
        if not Path(root).is_dir():
            error(report.problems, "missing_folder", str(root), "folder not found")
        return report

    def add(self, problems: list[Problem]) -> None:
        """Add problems, leaving out any already listed (a folder-wide one found per split)."""
        seen = {(p.kind, p.message) for p in self.problems}
        self.problems.extend(p for p in problems if (p.kind, p.message) not in seen)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "layout": self.layout,
            "ok": not self.errors,
            "counts": self.counts,
            "problems": [p.__dict__ for p in self.problems],
        }


def format_source_report(report: SourceReport, max_problems: int = 50) -> str:
    """The summary table and problem list of a :class:`SourceReport` as text."""
    lines = [f"dataset: {report.root} ({report.layout} layout)", ""]
    keys = list(dict.fromkeys(k for c in report.counts.values() for k in c))
    lines.append(f"{'':26s}" + "".join(f"{s:>10s}" for s in report.counts))
    for key in keys:
        cells = "".join(f"{c.get(key, 0):>10d}" for c in report.counts.values())
        lines.append(f"{key[:26]:26s}{cells}")
    return "\n".join(lines + format_problems(report.problems, max_problems))


def detect_layout(root: str | Path) -> str:
    """'deeplesion' (a ``DL_info.csv``), 'rad-chestct' (an ``img*_Abnormality_and_Location_Labels
    .csv``), 'vindr-cxr' (an ``annotations/annotations_<split>.csv`` or ``image_labels_<split>
    .csv``), 'chestxray14' (a ``Data_Entry_2017.csv``) or 'radgenome' (anything else)."""
    from rgct.data.chestxray14 import is_chestxray14
    from rgct.data.deeplesion import is_deeplesion
    from rgct.data.radchestct import is_radchest
    from rgct.data.vindr import is_vindr

    if is_deeplesion(root):
        return "deeplesion"
    if is_radchest(root):
        return "rad-chestct"
    if is_vindr(root):
        return "vindr-cxr"
    if is_chestxray14(root):
        return "chestxray14"
    return "radgenome"


def check_layout_tasks(tasks: list[str], layout: str, root: str | Path) -> list[str]:
    """``tasks``, when a ``layout`` folder gives samples for every one of them.

    Raises:
        DataError: naming the tasks it does not hold, the layout and the tasks it does.
    """
    known = LAYOUT_TASKS[layout]
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise DataError(
            f"task(s) {unknown} cannot be asked of {root}: it is a {layout} folder, whose tasks "
            f"are {list(known)}"
        )
    return list(tasks)


def check_source(
    root: str | Path, layout: str, *, deep: bool = True, max_volumes: int | None = None
) -> SourceReport:
    """Check a RAD-ChestCT, DeepLesion, VinDr-CXR or ChestX-ray14 folder (RadGenome:
    :func:`rgct.data.check.check_dataset`)."""
    if layout == "rad-chestct":
        from rgct.data.radchestct import check_radchest

        return check_radchest(root, deep=deep, max_volumes=max_volumes)
    if layout == "deeplesion":
        from rgct.data.deeplesion import check_deeplesion

        return check_deeplesion(root, deep=deep, max_volumes=max_volumes)
    if layout == "vindr-cxr":
        from rgct.data.vindr import check_vindr

        return check_vindr(root, deep=deep, max_volumes=max_volumes)
    if layout == "chestxray14":
        from rgct.data.chestxray14 import check_chestxray14

        return check_chestxray14(root, deep=deep, max_volumes=max_volumes)
    raise ValueError(f"check_source: layout must be one of {LAYOUTS[1:]}, got {layout!r}")
