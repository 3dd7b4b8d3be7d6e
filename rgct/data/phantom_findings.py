"""Abnormal findings painted into a phantom's anatomy, with their ground truth.

:func:`plan_findings` draws which findings a volume has (before the anatomy is built, since
cardiomegaly changes the heart); :func:`add_findings` paints each one into an
:class:`~rgct.data.phantom_anatomy.Anatomy` with realistic contrast and returns a
:class:`Finding` per finding that was actually placed (a finding that does not fit is dropped,
so the ground truth never names something absent from the voxels). The voxel at every
finding's ``center_voxel`` always carries the finding's own intensity.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields

import numpy as np

from rgct.data.phantom_anatomy import (
    LABEL_ID,
    LOBES,
    Anatomy,
    Point,
    ellipsoid_q,
    segment_box,
    segment_dist,
)
from rgct.data.phantom_text import FINDING_LABELS, FINDING_NAMES, FINDING_REGIONS

LUNG_KINDS = (
    "nodule",
    "ground_glass_opacity",
    "consolidation",
    "atelectasis",
    "emphysema",
    "bronchiectasis",
)
SINGLE_KINDS = (
    "pericardial_effusion",
    "cardiomegaly",
    "coronary_artery_wall_calcification",
    "lymphadenopathy",
    "arterial_wall_calcification",
    "hiatal_hernia",
)
APPLY_ORDER = (
    "pleural_effusion",
    "pericardial_effusion",
    "hiatal_hernia",
    "lymphadenopathy",
    "atelectasis",
    "consolidation",
    "ground_glass_opacity",
    "emphysema",
    "bronchiectasis",
    "nodule",
    "arterial_wall_calcification",
    "coronary_artery_wall_calcification",
    "cardiomegaly",
)
"""Painting order: space-occupying findings first, then parenchymal ones, then calcium."""
assert set(APPLY_ORDER) == set(FINDING_NAMES)

KIND_WEIGHTS = {
    "nodule": 3.0,
    "ground_glass_opacity": 1.5,
    "consolidation": 1.0,
    "atelectasis": 1.5,
    "emphysema": 1.2,
    "bronchiectasis": 0.8,
    "pleural_effusion": 1.5,
    "pericardial_effusion": 0.8,
    "cardiomegaly": 1.0,
    "coronary_artery_wall_calcification": 1.2,
    "lymphadenopathy": 1.0,
    "arterial_wall_calcification": 1.5,
    "hiatal_hernia": 0.7,
}
NORMAL_FRACTION = 0.15
"""Share of volumes drawn without any finding."""

_SOFT_TISSUE_OK = (
    "mediastinal tissue",
    "pericardial fat",
    "lymph node",
    "muscle",
    "diaphragm",
    *LOBES,
)


@dataclass
class Finding:
    """One finding's ground truth, as written to ``ground_truth.jsonl``."""

    kind: str
    label: str
    region: str
    anatomy: str
    side: str | None
    lobe: str | None
    size_mm: float
    size_text: str | None
    center_voxel: list[int]
    radius_vox: list[float]
    box_voxel: tuple[int, ...] | None = field(default=None, compare=False, repr=False)
    """(z0, y0, x0, z1, y1, x1), half-open: the box of the painted voxels (not in the JSON)."""
    crop: np.ndarray | None = field(default=None, compare=False, repr=False)
    """bool: the painted voxels inside ``box_voxel`` (not in the JSON; projected radiographs
    draw each finding's box from them, :mod:`rgct.data.drr`)."""

    def to_dict(self) -> dict:
        """The ``ground_truth.jsonl`` fields (``box_voxel`` and ``crop`` left out)."""
        skip = ("box_voxel", "crop")
        return {
            f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in skip
        }


def plan_findings(rng: np.random.Generator) -> list[dict]:
    """Draw the findings of one volume: ``[{"kind", "lobe", "side"}]`` in :data:`APPLY_ORDER`.

    About :data:`NORMAL_FRACTION` of volumes get none, the others 1-4. A kind never repeats in
    the same lobe, a pleural effusion never twice on one side, and the other non-lung kinds
    appear at most once.
    """
    if rng.random() < NORMAL_FRACTION:
        return []
    n = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15]))
    kinds = list(KIND_WEIGHTS)
    p = np.array([KIND_WEIGHTS[k] for k in kinds])
    p = p / p.sum()
    plan: list[dict] = []
    for _ in range(20 * n):
        if len(plan) == n:
            break
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        used = [(q["lobe"], q["side"]) for q in plan if q["kind"] == kind]
        if kind in SINGLE_KINDS and used:
            continue
        item = {"kind": kind, "lobe": None, "side": None}
        if kind in LUNG_KINDS:
            options = [lobe for lobe in LOBES if kind != "atelectasis" or "lower" in lobe]
            options = [lobe for lobe in options if (lobe, lobe.split()[0]) not in used]
            if not options:
                continue
            item["lobe"] = options[int(rng.integers(len(options)))]
            item["side"] = item["lobe"].split()[0]
        elif kind == "pleural_effusion":
            options = [s for s in ("right", "left") if (None, s) not in used]
            if not options:
                continue
            item["side"] = options[int(rng.integers(len(options)))]
        plan.append(item)
    return sorted(plan, key=lambda q: APPLY_ORDER.index(q["kind"]))


class _Painter:
    """Paints planned findings into an anatomy and keeps the voxels already taken."""

    def __init__(self, anat: Anatomy, rng: np.random.Generator) -> None:
        self.a, self.g, self.rng = anat, anat.grid, rng
        self.occupied = np.zeros(anat.grid.shape, bool)
        self.h = anat.grid.voxel_mm

    # helpers -------------------------------------------------------------------------------
    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def local_index(self, sl, idx) -> tuple[int, int, int]:
        return tuple(i - s.start for i, s in zip(idx, sl))

    def record(
        self,
        kind: str,
        mask: np.ndarray,
        center: tuple[int, int, int],
        size_mm: float,
        *,
        size_text: str | None = None,
        side: str | None = None,
        lobe: str | None = None,
        anatomy: str | None = None,
    ) -> Finding:
        """Mark ``mask`` (full grid) as taken and build the finding's ground truth."""
        self.occupied |= mask
        idx = np.nonzero(mask)
        radius = [round((float(i.max()) - float(i.min()) + 1.0) / 2.0, 1) for i in idx]
        box = tuple(int(i.min()) for i in idx) + tuple(int(i.max()) + 1 for i in idx)
        crop = mask[box[0] : box[3], box[1] : box[4], box[2] : box[5]].copy()
        region = FINDING_REGIONS[kind]
        if anatomy is None:
            anatomy = f"lung/lung/{side} lung/{lobe}" if lobe else f"{region}/{region}"
        return Finding(
            kind,
            FINDING_LABELS[kind],
            region,
            anatomy,
            side,
            lobe,
            round(float(size_mm), 1),
            size_text,
            [int(c) for c in center],
            radius,
            box,
            crop,
        )

    def extent_mm(self, mask: np.ndarray) -> float:
        idx = np.nonzero(mask)
        return max((float(i.max()) - float(i.min()) + 1.0) * s for i, s in zip(idx, self.g.spacing))

    def full(self, sl, local: np.ndarray) -> np.ndarray:
        out = np.zeros(self.g.shape, bool)
        out[sl] = local
        return out

    def nearest_in(self, mask: np.ndarray, target: Point) -> tuple[int, int, int]:
        """Voxel of ``mask`` nearest (in mm) to ``target``."""
        idx = np.argwhere(mask)
        pts = (idx - (np.array(self.g.shape) - 1) / 2.0) * np.array(self.g.spacing)
        return tuple(int(v) for v in idx[int(np.argmin(((pts - np.array(target)) ** 2).sum(1)))])

    def centroid_voxel(self, mask: np.ndarray) -> tuple[int, int, int]:
        idx = np.argwhere(mask)
        c = idx.mean(0)
        return tuple(int(v) for v in idx[int(np.argmin(((idx - c) ** 2).sum(1)))])

    def place_in_lobe(self, lobe: str, semi: Point, min_inside: float, tries: int = 40):
        """A random centre in ``lobe`` whose ellipsoid is mostly in the lobe and free."""
        lid = LABEL_ID[lobe]
        free = np.flatnonzero((self.a.label == lid) & ~self.occupied)
        if free.size == 0:
            return None
        for attempt in range(tries):
            scale = 0.85 ** (attempt // 10)
            s = tuple(v * scale for v in semi)
            idx = np.unravel_index(int(free[int(self.rng.integers(free.size))]), self.g.shape)
            c = self.g.point(idx)
            sl = self.g.box(c, s)
            q = ellipsoid_q(self.g, sl, c, s)
            inside = q < 1.0
            n = int(inside.sum())
            if n and (self.a.label[sl][inside] == lid).mean() < min_inside:
                continue
            if self.occupied[sl][inside].any():
                continue
            return idx, c, s, sl, q
        return None

    def soft_fill(
        self,
        sl,
        q: np.ndarray,
        semi: Point,
        allowed: np.ndarray,
        target: float | np.ndarray,
        only_below: bool = False,
    ) -> np.ndarray:
        """Blend HU towards ``target`` with a partial-volume edge; returns the >= 50% mask."""
        occ = np.clip((1.0 - np.sqrt(q)) * min(semi) / self.h + 0.5, 0.0, 1.0) * allowed
        hu = self.a.hu[sl]
        if only_below:
            occ = np.where(hu < target, occ, 0.0)
        hu += (occ * (target - hu)).astype(np.float32)
        return occ >= 0.5

    # lung findings -------------------------------------------------------------------------
    def nodule(self, lobe: str, side: str) -> Finding | None:
        d = (
            6.0 + 24.0 * float(self.rng.beta(1.3, 2.5))
            if self.rng.random() < 0.85
            else self.u(3.0, 6.0)
        )
        d_short = d * self.u(0.7, 1.0)
        semi = (
            (d / 2 * self.u(0.75, 1.0), d / 2, d_short / 2)
            if self.rng.random() < 0.5
            else (d / 2 * self.u(0.75, 1.0), d_short / 2, d / 2)
        )
        placed = self.place_in_lobe(lobe, semi, 0.9)
        if placed is None:
            return None
        idx, c, semi, sl, q = placed
        target = self.u(-50.0, 60.0)
        allowed = self.a.label[sl] == LABEL_ID[lobe]
        local = self.soft_fill(sl, q, semi, allowed & ~self.occupied[sl], target)
        li = self.local_index(sl, idx)
        local[li], self.a.hu[idx] = True, target
        d, d_short = 2 * max(semi[1:]), 2 * min(semi[1:])
        text = f"{max(round(d), 1)}x{max(round(d_short), 1)} mm"
        return self.record(
            "nodule", self.full(sl, local), idx, d, size_text=text, side=side, lobe=lobe
        )

    def ground_glass_opacity(self, lobe: str, side: str) -> Finding | None:
        semi = (self.u(12, 26), self.u(12, 28), self.u(12, 28))
        placed = self.place_in_lobe(lobe, semi, 0.5)
        if placed is None:
            return None
        idx, c, semi, sl, q = placed
        target = self.u(-640.0, -560.0)
        allowed = (self.a.label[sl] == LABEL_ID[lobe]) & ~self.occupied[sl]
        local = self.soft_fill(sl, q, semi, allowed, target, only_below=True) | (
            (q < 1.0) & allowed
        )
        li = self.local_index(sl, idx)
        local[li] = True
        self.a.hu[idx] = max(float(self.a.hu[idx]), target)
        mask = self.full(sl, local)
        return self.record(
            "ground_glass_opacity", mask, idx, self.extent_mm(mask), side=side, lobe=lobe
        )

    def consolidation(self, lobe: str, side: str) -> Finding | None:
        semi = (self.u(14, 30), self.u(14, 32), self.u(14, 32))
        placed = self.place_in_lobe(lobe, semi, 0.6)
        if placed is None:
            return None
        idx, c, semi, sl, q = placed
        target = self.u(5.0, 40.0)
        allowed = (self.a.label[sl] == LABEL_ID[lobe]) & ~self.occupied[sl]
        local = self.soft_fill(sl, q, semi, allowed, target)
        # air bronchograms: thin air lines crossing the patch, off its centre
        r_air = max(1.2, 0.45 * self.h)
        for _ in range(int(self.rng.integers(2, 4))):
            d = self.rng.standard_normal(3)
            d /= np.linalg.norm(d)
            off = self.rng.standard_normal(3)
            off -= d * (off @ d)
            off = off / (np.linalg.norm(off) + 1e-9) * self.u(0.3, 0.6) * min(semi)
            length = 0.8 * max(semi)
            p0 = tuple(np.add(c, off) - d * length)
            p1 = tuple(np.add(c, off) + d * length)
            dist, _ = segment_dist(self.g, sl, p0, p1)
            self.a.hu[sl][(dist <= r_air) & local] = -920.0
        li = self.local_index(sl, idx)
        local[li], self.a.hu[idx] = True, target
        mask = self.full(sl, local)
        return self.record("consolidation", mask, idx, self.extent_mm(mask), side=side, lobe=lobe)

    def atelectasis(self, lobe: str, side: str) -> Finding | None:
        lid = LABEL_ID[lobe]
        idx = np.argwhere((self.a.label == lid) & ~self.occupied)
        if len(idx) == 0:
            return None
        zlo, zhi = idx[:, 0].min(), idx[:, 0].max()
        low = idx[idx[:, 0] <= zlo + 0.4 * (zhi - zlo)]
        cand = low[np.argsort(low[:, 1], kind="stable")[: min(15, len(low))]]  # most posterior
        anchor = tuple(int(v) for v in cand[int(self.rng.integers(len(cand)))])
        c = self.g.point(anchor)
        semi = (self.u(12, 22), self.u(10, 18), self.u(20, 35))
        sl = self.g.box(c, semi)
        q = ellipsoid_q(self.g, sl, c, semi)
        local = (q < 1.0) & (self.a.label[sl] == lid) & ~self.occupied[sl]
        local[self.local_index(sl, anchor)] = True
        self.a.hu[sl][local] = self.u(20.0, 45.0)
        mask = self.full(sl, local)
        center = self.centroid_voxel(mask)
        return self.record("atelectasis", mask, center, self.extent_mm(mask), side=side, lobe=lobe)

    def emphysema(self, lobe: str, side: str) -> Finding | None:
        region = (self.u(18, 30), self.u(18, 30), self.u(18, 30))
        placed = self.place_in_lobe(lobe, region, 0.5)
        if placed is None:
            return None
        idx, c, region, _, _ = placed
        lid = LABEL_ID[lobe]
        mask = np.zeros(self.g.shape, bool)
        blobs = [(c, self.u(4.5, 8.0))]
        for _ in range(int(self.rng.integers(5, 11))):
            off = self.rng.uniform(-1, 1, 3) * np.array(region)
            blobs.append((tuple(np.add(c, off)), self.u(3.0, 7.0)))
        for bc, r in blobs:
            sl = self.g.box(bc, r)
            if sl is None:
                continue
            local = (
                (ellipsoid_q(self.g, sl, bc, (r, r, r)) < 1.0)
                & (self.a.label[sl] == lid)
                & ~self.occupied[sl]
            )
            self.a.hu[sl][local] = -975.0
            mask[sl] |= local
        mask[idx], self.a.hu[idx] = True, -975.0
        return self.record("emphysema", mask, idx, self.extent_mm(mask), side=side, lobe=lobe)

    def bronchiectasis(self, lobe: str, side: str) -> Finding | None:
        placed = self.place_in_lobe(lobe, (20.0, 20.0, 20.0), 0.5)
        if placed is None:
            return None
        idx, c, _, _, _ = placed
        lid = LABEL_ID[lobe]
        hilum = np.mean(self.a.lm["hilum"][side], axis=0)
        away = np.subtract(c, hilum)
        away /= np.linalg.norm(away) + 1e-9
        tubes = []
        for i in range(int(self.rng.integers(3, 5))):
            d = away + 0.5 * self.rng.standard_normal(3)
            d /= np.linalg.norm(d)
            mid = np.asarray(c) + (0 if i == 0 else self.rng.uniform(-12, 12, 3))
            half = self.u(12, 22)
            r_in = max(self.u(3.5, 5.5), 0.6 * self.h)
            r_out = r_in + max(self.u(1.5, 2.5), 0.9 * self.h)
            tubes.append((tuple(mid - d * half), tuple(mid + d * half), r_in, r_out, d, mid))
        mask = np.zeros(self.g.shape, bool)
        wall_hu = self.u(10.0, 35.0)
        for p0, p1, _, r_out, _, _ in tubes:
            sl = segment_box(self.g, p0, p1, r_out)
            dist, _ = segment_dist(self.g, sl, p0, p1)
            local = (dist <= r_out) & (self.a.label[sl] == lid) & ~self.occupied[sl]
            self.a.hu[sl][local] = wall_hu
            mask[sl] |= local
        for p0, p1, r_in, _, _, _ in tubes:
            sl = segment_box(self.g, p0, p1, r_in)
            dist, _ = segment_dist(self.g, sl, p0, p1)
            self.a.hu[sl][(dist <= r_in) & mask[sl]] = -950.0
        # the centre voxel sits on the wall of the first airway
        _, _, r_in, r_out, d, mid = tubes[0]
        perp = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
        perp /= np.linalg.norm(perp)
        center = self.g.index(tuple(mid + perp * (r_in + r_out) / 2.0))
        if self.a.label[center] != lid or self.occupied[center]:
            center = idx
        mask[center], self.a.hu[center] = True, wall_hu
        if not mask.any():
            return None
        return self.record(
            "bronchiectasis", mask, center, self.extent_mm(mask), side=side, lobe=lobe
        )

    # pleura, heart, mediastinum, esophagus ----------------------------------------------------
    def pleural_effusion(self, side: str) -> Finding | None:
        g = self.g
        lung = np.isin(self.a.label, [LABEL_ID[lb] for lb in LOBES if lb.startswith(side)])
        if not lung.any():
            return None
        has = lung.any(axis=1)  # (D, W)
        first = np.argmax(lung, axis=1)  # most posterior lung voxel per (z, x)
        zs = np.nonzero(has.any(axis=1))[0]
        z_bot, z_top_lung = g.axes[0][zs.min()], g.axes[0][zs.max()]
        z_top = z_bot + self.u(0.45, 0.7) * (z_top_lung - z_bot)
        depth = self.u(10.0, 50.0)
        depth_z = (
            depth * np.clip((z_top - g.axes[0]) / max(z_top - z_bot, 1.0), 0.0, 1.0) ** 0.5
        )  # (D,)
        j = np.arange(g.shape[1])[None, :, None]
        eff = (
            lung
            & ((j - first[:, None, :]) * g.spacing[1] < depth_z[:, None, None])
            & has[:, None, :]
        )
        if not eff.any():
            return None
        name = f"pleural effusion {side}"
        self.a.label[eff] = LABEL_ID[name]
        self.a.hu[eff] = self.u(8.0, 20.0)
        counts = eff.sum(axis=1)  # (D, W)
        zc, xc = np.unravel_index(int(np.argmax(counts)), counts.shape)
        ys = np.nonzero(eff[zc, :, xc])[0]
        center = (int(zc), int(ys[len(ys) // 2]), int(xc))
        size = float(counts.max()) * g.spacing[1]
        return self.record(
            "pleural_effusion", eff, center, size, size_text=f"{round(size)} mm", side=side
        )

    def pericardial_effusion(self) -> Finding | None:
        lm, g = self.a.lm, self.g
        hc, semi, angle = lm["heart_c"], lm["heart_semi"], lm["heart_angle"]
        t = self.u(6.0, 18.0)
        k = 1.0 + t / float(np.mean(semi))
        sl = g.box(hc, max(semi) * k * 1.2)
        q = ellipsoid_q(g, sl, hc, semi, angle)
        zz = g.local(sl)[0]
        ok = (
            self.a.labels_in(sl, _SOFT_TISSUE_OK)
            & lm["cavity"][sl]
            & (zz >= lm["z_d"][sl[1], sl[2]][None] - 3.0)
        )
        shell = (q >= 1.0) & (q < k * k) & ok
        if not shell.any():
            return None
        self.a.label[sl][shell] = LABEL_ID["pericardial effusion"]
        self.a.hu[sl][shell] = self.u(8.0, 20.0)
        mask = self.full(sl, shell)
        # centre: mid-shell on the heart's left side, at the level of the heart's centre
        target = (hc[0], hc[1], hc[2] - 0.8 * max(semi[1:]) * (1.0 + k) / 2.0)
        center = self.nearest_in(mask, target)
        return self.record(
            "pericardial_effusion",
            mask,
            center,
            t,
            size_text=f"{round(t)} mm",
            anatomy="heart/heart/heart tissue",
        )

    def cardiomegaly(self) -> Finding | None:
        heart = self.a.label == LABEL_ID["heart tissue"]
        if not heart.any():
            return None
        center = self.nearest_in(heart, self.a.lm["heart_c"])
        idx = np.nonzero(heart)
        width = (float(idx[2].max()) - float(idx[2].min()) + 1.0) * self.g.spacing[2]
        return self.record("cardiomegaly", heart, center, width, anatomy="heart/heart/heart tissue")

    def lymphadenopathy(self) -> Finding | None:
        lm, u = self.a.lm, self.u
        yt, zc, xm, rt = lm["y_t"], lm["z_car"], lm["x_m"], lm["r_t"]
        short = u(12.0, 24.0)
        long_ip = short * u(1.0, 1.3)
        semi = (short * u(1.15, 1.5) / 2, short / 2, long_ip / 2)
        stations = [
            (zc + u(15, 35), yt + u(-2, 6), xm + rt + 4.0 + semi[2]),
            (zc - u(18, 28), yt - 6.0, xm),
            (zc + u(20, 40), yt + u(35, 50), xm - u(0, 10)),
            (zc + u(0, 10), yt + 10.0, xm - 24.0),
        ]
        allowed_names = ("mediastinal tissue", "pericardial fat", "lymph node", *LOBES)
        for i in self.rng.permutation(len(stations)):
            c = stations[int(i)]
            idx = self.g.index(c)
            if self.a.label[idx] not in [LABEL_ID[n] for n in allowed_names] or self.occupied[idx]:
                continue
            sl = self.g.box(c, semi)
            local = (
                (ellipsoid_q(self.g, sl, c, semi) < 1.0)
                & self.a.labels_in(sl, allowed_names)
                & ~self.occupied[sl]
            )
            local[self.local_index(sl, idx)] = True
            self.a.label[sl][local] = LABEL_ID["lymph node"]
            self.a.hu[sl][local] = u(35.0, 50.0)
            text = f"{round(long_ip)}x{round(short)} mm"
            return self.record("lymphadenopathy", self.full(sl, local), idx, short, size_text=text)
        return None

    def _spots(
        self, points: list[Point], label: str, hu_range: tuple[float, float]
    ) -> tuple[np.ndarray, tuple, float]:
        """Paint small bright spots at ``points`` (only on ``label``); the first kept is the centre."""
        mask = np.zeros(self.g.shape, bool)
        center, biggest = None, 0.0
        for p in points:
            idx = self.g.index(p)
            if self.a.label[idx] != LABEL_ID[label]:
                continue
            r = self.u(1.5, 3.0)
            value = self.u(*hu_range)
            sl = self.g.box(p, r)
            if sl is not None:
                local = (ellipsoid_q(self.g, sl, p, (r, r, r)) < 1.0) & (
                    self.a.label[sl] == LABEL_ID[label]
                )
                self.a.hu[sl][local] = value
                mask[sl] |= local
            mask[idx], self.a.hu[idx] = True, value
            biggest = max(biggest, 2 * r)
            center = center or idx
        return mask, center, biggest

    def arterial_wall_calcification(self) -> Finding | None:
        lm = self.a.lm
        pts, radii = lm["aorta"], lm["aorta_r"]
        spots = []
        for _ in range(int(self.rng.integers(3, 9))):
            i = int(self.rng.integers(1, 5))
            p0, p1 = np.asarray(pts[i]), np.asarray(pts[i + 1])
            axis = (p1 - p0) / (np.linalg.norm(p1 - p0) + 1e-9)
            e = self.rng.standard_normal(3)
            e -= axis * (e @ axis)
            e /= np.linalg.norm(e) + 1e-9
            inset = max(1.0, 0.5 * max(self.g.spacing))
            spots.append(tuple(p0 + self.u(0.1, 0.9) * (p1 - p0) + e * (radii[i] - inset)))
        mask, center, size = self._spots(spots, "aorta", (450.0, 1000.0))
        if center is None:
            return None
        return self.record(
            "arterial_wall_calcification",
            mask,
            center,
            size,
            anatomy="mediastinum/mediastinum/aorta",
        )

    def coronary_artery_wall_calcification(self) -> Finding | None:
        lm, g = self.a.lm, self.g
        hc, semi, angle = np.asarray(lm["heart_c"]), lm["heart_semi"], lm["heart_angle"]
        w0 = np.array([self.u(0.0, 0.5), self.u(0.5, 1.0), self.u(-1.0, 0.2)])  # anterior, upper
        spots = []
        inset = max(2.5, 0.6 * max(g.spacing))
        for _ in range(int(self.rng.integers(2, 7))):
            w = w0 / np.linalg.norm(w0) + 0.35 * self.rng.standard_normal(3)
            w /= np.linalg.norm(w)
            # distance to the ellipsoid surface along w (rotated frame as in ellipsoid_q)
            c, s = math.cos(angle), math.sin(angle)
            wx, wy = w[2] * c + w[1] * s, -w[2] * s + w[1] * c
            lam = 1.0 / math.sqrt((w[0] / semi[0]) ** 2 + (wy / semi[1]) ** 2 + (wx / semi[2]) ** 2)
            # step inwards until the spot lies in the heart (it may be clipped by the chest wall)
            for depth in np.arange(inset, lam, max(g.spacing)):
                p = tuple(hc + w * (lam - depth))
                if self.a.label[g.index(p)] == LABEL_ID["heart tissue"]:
                    spots.append(p)
                    break
        mask, center, size = self._spots(spots, "heart tissue", (400.0, 900.0))
        if center is None:
            return None
        return self.record(
            "coronary_artery_wall_calcification",
            mask,
            center,
            size,
            anatomy="heart/heart/heart tissue",
        )

    def hiatal_hernia(self) -> Finding | None:
        lm, g, u = self.a.lm, self.g, self.u
        p = lm["esophagus"][2]
        semi = (u(18, 30), u(15, 25), u(18, 30))
        j, i = g.index(p)[1:]
        allowed_names = (*_SOFT_TISSUE_OK, "esophagus", "heart tissue", "pericardial effusion")
        allowed_ids = [LABEL_ID[n] for n in allowed_names]
        shift_y, shift_x = u(0, 6), -u(0, 8)
        for lift in (0.6, 0.4, 0.8, 1.0, 0.2):
            c = (float(lm["z_d"][j, i]) + lift * semi[0], p[1] + shift_y, p[2] + shift_x)
            idx = g.index(c)
            if self.a.label[idx] in allowed_ids and not self.occupied[idx]:
                break
        else:
            return None
        sl = g.box(c, semi)
        q = ellipsoid_q(g, sl, c, semi)
        local = (
            (q < 1.0) & self.a.labels_in(sl, allowed_names) & lm["cavity"][sl] & ~self.occupied[sl]
        )
        li = self.local_index(sl, idx)
        local[li] = True
        inner = local & (q < (1.0 - 3.5 / min(semi)) ** 2)
        yy = np.broadcast_to(g.local(sl)[1], local.shape)
        fluid = u(10.0, 25.0)
        self.a.label[sl][local] = LABEL_ID["hiatal hernia"]
        self.a.hu[sl][local] = 40.0
        self.a.hu[sl][inner] = np.where(yy[inner] > c[1] + 0.45 * semi[1], -1000.0, fluid)
        self.a.hu[idx] = fluid
        mask = self.full(sl, local)
        return self.record(
            "hiatal_hernia", mask, idx, self.extent_mm(mask), anatomy="esophagus/esophagus"
        )


def add_findings(anat: Anatomy, plan: list[dict], rng: np.random.Generator) -> list[Finding]:
    """Paint the planned findings into ``anat`` (in place); return those actually placed."""
    painter = _Painter(anat, rng)
    out = []
    for item in plan:
        fn = getattr(painter, item["kind"])
        if item["kind"] in LUNG_KINDS:
            f = fn(item["lobe"], item["side"])
        elif item["kind"] == "pleural_effusion":
            f = fn(item["side"])
        else:
            f = fn()
        if f is not None:
            out.append(f)
    return out
