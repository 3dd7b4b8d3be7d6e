"""Normal chest anatomy of a synthetic CT phantom: a label map and Hounsfield units.

Everything is built in millimetres in a patient frame centred on the field of view, with
axes (z, y, x) = (inferior->superior, posterior->anterior, patient left->patient right), the
RAS+ convention of the NIfTI files the phantom is written to. Each structure is painted into a
``uint8`` label map (later paint wins) and a float32 HU array at the same time, so masks and
intensities always agree. Findings are added afterwards by :mod:`rgct.data.phantom_findings`.

Only numpy is used; every primitive works on the bounding box of its structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

FOV_MM = (320.0, 320.0, 320.0)
"""Field of view (z, y, x) in mm; the voxel spacing is FOV_MM / shape."""

Point = tuple[float, float, float]
"""A position (z, y, x) in mm."""

# --- the label map ---------------------------------------------------------------------------
# name -> top-level region (None: belongs to no region mask). The order gives the label ids.
_LABEL_TABLE: tuple[tuple[str, str | None], ...] = (
    ("air", None),
    ("subcutaneous fat", None),
    ("muscle", None),
    ("mediastinal tissue", "mediastinum"),
    ("right lung upper lobe", "lung"),
    ("right lung middle lobe", "lung"),
    ("right lung lower lobe", "lung"),
    ("left lung upper lobe", "lung"),
    ("left lung lower lobe", "lung"),
    ("trachea", "trachea and bronchie"),
    ("bronchie", "trachea and bronchie"),
    ("heart tissue", "heart"),
    ("pericardial fat", "mediastinum"),
    ("aorta", "mediastinum"),
    ("pulmonary artery", "mediastinum"),
    ("superior vena cava", "mediastinum"),
    ("lymph node", "mediastinum"),
    ("esophagus", "esophagus"),
    ("thyroid gland", "thyroid"),
    ("thoracic vertebrae", "bone"),
    ("spinal canal", "bone"),
    ("ribs left", "bone"),
    ("ribs right", "bone"),
    ("sternum", "bone"),
    ("liver", "abdomen"),
    ("stomach", "abdomen"),
    ("spleen", "abdomen"),
    ("abdominal tissue", "abdomen"),
    ("left breast", "breast"),
    ("right breast", "breast"),
    ("pleural effusion left", "pleura"),
    ("pleural effusion right", "pleura"),
    ("pericardial effusion", "heart"),
    ("hiatal hernia", "esophagus"),
    ("diaphragm", None),
    ("table", None),
)
LABEL_NAMES: tuple[str, ...] = tuple(name for name, _ in _LABEL_TABLE)
LABEL_ID: dict[str, int] = {name: i for i, name in enumerate(LABEL_NAMES)}
LABEL_REGION: dict[str, str | None] = dict(_LABEL_TABLE)

LOBES = (
    "right lung upper lobe",
    "right lung middle lobe",
    "right lung lower lobe",
    "left lung upper lobe",
    "left lung lower lobe",
)
LUNG_LABELS = tuple(LABEL_ID[lobe] for lobe in LOBES)

ANATOMY_LABELS: dict[str, tuple[str, ...]] = {
    "right lung": LOBES[:3],
    "left lung": LOBES[3:],
    **{lobe: (lobe,) for lobe in LOBES},
    "trachea": ("trachea",),
    "bronchie": ("bronchie",),
    "heart tissue": ("heart tissue",),
    "aorta": ("aorta",),
    "pulmonary artery": ("pulmonary artery",),
    "superior vena cava": ("superior vena cava",),
    "mediastinal tissue": ("mediastinal tissue", "pericardial fat", "lymph node"),
    "esophagus": ("esophagus",),
    "thyroid gland": ("thyroid gland",),
    "thoracic vertebrae": ("thoracic vertebrae",),
    "spinal canal": ("spinal canal",),
    "ribs left": ("ribs left",),
    "ribs right": ("ribs right",),
    "sternum": ("sternum",),
    "liver": ("liver",),
    "stomach": ("stomach",),
    "spleen": ("spleen",),
    "left breast": ("left breast",),
    "right breast": ("right breast",),
}
"""Anatomy mask name (as written to ``*_anatomy_mask``) -> the labels it covers."""


# --- geometry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """Voxel grid of shape (D, H, W) with spacing (dz, dy, dx) mm, centred on the origin."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @cached_property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """mm coordinates of the voxel centres along z (D,), y (H,), x (W,)."""
        return tuple(
            ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)
            for n, s in zip(self.shape, self.spacing)
        )

    def broadcast(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Axes shaped (D,1,1), (1,H,1), (1,1,W) for broadcasting over the full grid."""
        z, y, x = self.axes
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def index(self, p: Point) -> tuple[int, int, int]:
        """Nearest voxel (z, y, x) to the point ``p`` (mm), clipped into the grid."""
        return tuple(
            int(min(max(round(c / s + (n - 1) / 2.0), 0), n - 1))
            for c, s, n in zip(p, self.spacing, self.shape)
        )

    def point(self, idx: tuple[int, int, int]) -> Point:
        """mm position of voxel ``idx``."""
        return tuple(
            float((i - (n - 1) / 2.0) * s) for i, s, n in zip(idx, self.spacing, self.shape)
        )

    def box(self, center: Point, radius: Point | float) -> tuple[slice, slice, slice] | None:
        """Slices of the voxels within ``radius`` (mm, per axis) of ``center``; None if empty."""
        radius = (radius,) * 3 if np.isscalar(radius) else radius
        out = []
        for c, r, s, n in zip(center, radius, self.spacing, self.shape):
            lo = max(math.ceil((c - r) / s + (n - 1) / 2.0), 0)
            hi = min(math.floor((c + r) / s + (n - 1) / 2.0) + 1, n)
            if lo >= hi:
                return None
            out.append(slice(lo, hi))
        return tuple(out)

    def local(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable mm coordinates of the voxels in box ``sl``."""
        z, y, x = self.axes
        return z[sl[0]][:, None, None], y[sl[1]][None, :, None], x[sl[2]][None, None, :]

    @property
    def voxel_mm(self) -> float:
        """Mean in-plane voxel size (mm), used for partial-volume edges."""
        return float((self.spacing[1] + self.spacing[2]) / 2.0)


def ellipsoid_q(grid: Grid, sl, center: Point, semi: Point, angle: float = 0.0) -> np.ndarray:
    """Normalised squared radius of an ellipsoid over box ``sl`` (< 1 inside).

    Args:
        center: (z, y, x) mm. semi: semi-axes (z, y, x) mm, the (y, x) pair rotated by
            ``angle`` radians in the axial plane (counter-clockwise seen from above).
    """
    z, y, x = grid.local(sl)
    dz, dy, dx = z - center[0], y - center[1], x - center[2]
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = dx * c + dy * s, -dx * s + dy * c
    return (dz / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dx / semi[2]) ** 2


def segment_dist(grid: Grid, sl, p0: Point, p1: Point) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) of the voxels of box ``sl`` to the segment p0-p1, and the position t."""
    z, y, x = grid.local(sl)
    d = np.subtract(p1, p0, dtype=np.float64)
    n2 = float(d @ d) or 1e-9
    rz, ry, rx = z - p0[0], y - p0[1], x - p0[2]
    t = np.clip((rz * d[0] + ry * d[1] + rx * d[2]) / n2, 0.0, 1.0)
    dist2 = (rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2
    return np.sqrt(dist2), t


def segment_box(grid: Grid, p0: Point, p1: Point, radius: float):
    """Bounding box (slices) of a capsule of ``radius`` around segment p0-p1."""
    lo = np.minimum(p0, p1) - radius
    hi = np.maximum(p0, p1) + radius
    return grid.box(tuple((lo + hi) / 2), tuple((hi - lo) / 2))


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[int, int, int]
) -> np.ndarray:
    """Unit-variance-ish smooth random field (D, H, W): a coarse grid linearly upsampled."""
    coarse = rng.standard_normal(tuple(c + 2 for c in cells)).astype(np.float32)
    out = coarse
    for axis, n in enumerate(shape):
        pos = np.linspace(0.5, cells[axis] + 0.5, n, dtype=np.float32)
        i0 = np.floor(pos).astype(np.int64)
        w = (pos - i0).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
    return out.astype(np.float32)


# --- the anatomy -------------------------------------------------------------------------------
@dataclass
class Anatomy:
    """A phantom under construction: labels, HU and the landmarks findings need.

    Attributes:
        grid: voxel grid.
        label: (D, H, W) uint8 label ids (see :data:`LABEL_NAMES`).
        hu: (D, H, W) float32 Hounsfield units (noise is added at the very end).
        lm: landmarks in mm (heart centre/semi-axes/angle, airway/vessel polylines, ...).
        has_breast: whether breast tissue was drawn.
    """

    grid: Grid
    label: np.ndarray
    hu: np.ndarray
    lm: dict = field(default_factory=dict)
    has_breast: bool = False

    def paint(
        self,
        sl,
        inside: np.ndarray,
        name: str,
        hu: float | np.ndarray,
        where: np.ndarray | None = None,
    ) -> None:
        """Set label ``name`` and HU inside box ``sl`` where ``inside`` (and ``where``) hold."""
        if where is not None:
            inside = inside & where
        self.label[sl][inside] = LABEL_ID[name]
        if np.isscalar(hu):
            self.hu[sl][inside] = hu
        else:
            self.hu[sl][inside] = np.broadcast_to(hu, inside.shape)[inside]

    def labels_in(self, sl, names) -> np.ndarray:
        """Boolean mask over box ``sl`` of voxels whose label is one of ``names``."""
        return np.isin(self.label[sl], [LABEL_ID[n] for n in names])

    def tube(
        self,
        points: list[Point],
        radius: float | list[float],
        name: str,
        hu: float,
        where_names=None,
    ) -> None:
        """Paint a tube along a polyline (constant or per-segment radius)."""
        radii = [radius] * (len(points) - 1) if np.isscalar(radius) else radius
        for p0, p1, r in zip(points[:-1], points[1:], radii):
            sl = segment_box(self.grid, p0, p1, r)
            if sl is None:
                continue
            dist, _ = segment_dist(self.grid, sl, p0, p1)
            where = None if where_names is None else self.labels_in(sl, where_names)
            self.paint(sl, dist <= r, name, hu, where)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _superellipse(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    return (np.abs(a) ** p + np.abs(b) ** p) ** (1.0 / p)


class _Builder:
    """Paints the normal anatomy in a fixed order; random sizes, positions and shapes."""

    def __init__(self, grid: Grid, rng: np.random.Generator, heart_scale: float) -> None:
        self.g = grid
        self.rng = rng
        self.a = Anatomy(
            grid=grid,
            label=np.zeros(grid.shape, np.uint8),
            hu=np.full(grid.shape, -1000.0, np.float32),
        )
        self.heart_scale = heart_scale

    # landmarks ---------------------------------------------------------------------------------
    def sample_landmarks(self) -> dict:
        u, rng = self.rng.uniform, self.rng
        s = u(0.9, 1.02)
        cax = 110.0 * s * u(0.95, 1.05)
        cay = 88.0 * s * u(0.93, 1.07)
        wall_x, wall_ant, wall_post = u(22, 33), u(18, 28), u(40, 48)
        cc = (wall_post - wall_ant) / 2.0 + u(-4.0, 4.0)
        body_lo, body_hi = cc - cay - wall_post, cc + cay + wall_ant
        lm = dict(
            cax=cax,
            cay=cay,
            cc=cc,
            p_cav=u(2.0, 2.5),
            bax=cax + wall_x,
            bay=(body_hi - body_lo) / 2,
            bc=(body_hi + body_lo) / 2,
            p_body=u(2.0, 2.4),
            body_lo=body_lo,
            body_hi=body_hi,
            fat=u(7.0, 24.0),
            z_apex=u(118, 135),
            dome_r=u(-60, -42),
            z_car=u(22, 42),
            rv=u(15, 19),
            x_m=u(-7, 1),
            rib_pitch=u(23, 27),
            rib_drop=u(55, 80),
        )
        lm["dome_l"] = lm["dome_r"] - u(8, 20)
        lm["y_v"] = cc - cay + u(22, 30)
        lm["y_t"] = lm["y_v"] + lm["rv"] + u(17, 24)
        lm["r_t"] = u(7.0, 9.5)
        lm["has_breast"] = bool(rng.random() < 0.35)
        return lm

    # body, cavity and diaphragm ---------------------------------------------------------------
    def body(self) -> None:
        g, a, lm = self.g, self.a, self.lm
        z, y, x = g.broadcast()
        taper = 1.0 + 0.04 * (-z / 160.0)  # a little wider at the bottom
        rho = _superellipse(
            x / (lm["bax"] * taper), (y - lm["bc"]) / (lm["bay"] * taper), lm["p_body"]
        )
        body = rho < 1.0
        depth = (1.0 - rho) * np.hypot(x, y - lm["bc"]) / np.maximum(rho, 1e-3)
        everything = (slice(None),) * 3
        a.paint(everything, body, "subcutaneous fat", -100.0)
        a.paint(everything, body & (depth > lm["fat"]), "muscle", 45.0)
        # the scanner table: a curved plate under the back
        yt = lm["body_lo"] - 10.0 - 0.0015 * x**2
        table = (y < yt) & (y > yt - 6.0) & (np.abs(x) < 150.0) & np.ones_like(z, bool)
        a.paint(everything, table, "table", 150.0)

        # the thoracic cavity narrows towards the apices
        top = np.clip((z + 40.0) / (lm["z_apex"] + 40.0), 0.0, 1.0) ** 1.5
        rc = _superellipse(
            x / (lm["cax"] * (1.0 - 0.16 * top)), (y - lm["cc"]) / lm["cay"], lm["p_cav"]
        )
        self.cavity = rc < 1.0
        self.rho_c = rc
        # diaphragm height over (y, x): two domes, the right one higher; lower posteriorly
        y2, x2 = g.axes[1][:, None], g.axes[2][None, :]
        yd = lm["cc"] + 0.1 * lm["cay"]
        r2r = ((x2 - 0.5 * lm["cax"]) / (0.75 * lm["cax"])) ** 2 + (
            (y2 - yd) / (1.1 * lm["cay"])
        ) ** 2
        r2l = ((x2 + 0.5 * lm["cax"]) / (0.75 * lm["cax"])) ** 2 + (
            (y2 - yd) / (1.1 * lm["cay"])
        ) ** 2
        self.z_d = np.maximum(lm["dome_r"] - 60.0 * r2r, lm["dome_l"] - 60.0 * r2l).astype(
            np.float32
        )
        lm["z_d"] = self.z_d
        below = z < self.z_d[None] - 4.0
        a.paint(everything, self.cavity, "muscle", 45.0)
        a.paint(everything, self.cavity & ~below & (z < self.z_d[None]), "diaphragm", 45.0)
        a.paint(everything, self.cavity & below, "abdominal tissue", -95.0)
        self.above = self.cavity & (z >= self.z_d[None])

    # lungs and mediastinum -------------------------------------------------------------------
    def lungs(self) -> None:
        g, a, lm, u = self.g, self.a, self.lm, self.rng.uniform
        z, y, x = g.broadcast()
        yv, yt, cay, cc = lm["y_v"], lm["y_t"], lm["cay"], lm["cc"]
        # mediastinal half-width as a function of y (posterior wide: spine, aorta, esophagus)
        knots_y = [yv - 30, yv + lm["rv"] + 10, yt, yt + 25, cc + cay]
        knots_w = [40.0, 36.0, 22.0, 17.0, 13.0]
        hw = np.interp(g.axes[1], knots_y, knots_w).astype(np.float32)[None, :, None]
        hw = hw + np.where(z > lm["z_apex"] - 40, 8.0, 0.0)
        med = (np.abs(x - lm["x_m"]) < hw) & (y > yv - lm["rv"] - 5.0)
        paraspinal = (np.abs(x - lm["x_m"]) < 42.0) & (y <= yv - lm["rv"] - 5.0)
        # lung apices: each lung narrows to a point at z_apex
        t = np.sqrt(np.clip((lm["z_apex"] - z) / 45.0, 0.0, 1.0))
        ya = cc - 0.2 * cay
        apex_ok = np.zeros(g.shape, bool)
        for side in (1.0, -1.0):
            xa = side * 0.5 * lm["cax"]
            apex_ok |= ((x - xa) / (0.55 * lm["cax"] * t + 1e-3)) ** 2 + (
                (y - ya) / (0.8 * cay * t + 1e-3)
            ) ** 2 < 1.0
        lung = self.above & ~med & ~paraspinal & apex_ok & (z < lm["z_apex"])
        everything = (slice(None),) * 3
        a.paint(everything, self.above & med, "mediastinal tissue", -90.0)
        # lobes: oblique fissures (posterior-superior to anterior-inferior), right horizontal one
        right = x > lm["x_m"]
        ly = cc - 0.1 * cay
        zf_r = u(-20, 0) - u(0.8, 1.3) * (y - ly) + u(-0.15, 0.15) * (np.abs(x) - 60)
        zf_l = u(-15, 5) - u(0.8, 1.3) * (y - ly) + u(-0.15, 0.15) * (np.abs(x) - 60)
        zh = u(-5, 15) + u(-0.1, 0.1) * (y - ly)
        lower_r, lower_l = z < zf_r, z < zf_l
        texture = -865.0 + 45.0 * np.exp(-(y - (cc - cay)) / 40.0)  # dependent lung is denser
        for name, sel in (
            ("right lung lower lobe", right & lower_r),
            ("right lung middle lobe", right & ~lower_r & (z < zh)),
            ("right lung upper lobe", right & ~lower_r & (z >= zh)),
            ("left lung lower lobe", ~right & lower_l),
            ("left lung upper lobe", ~right & ~lower_l),
        ):
            a.paint(everything, lung & sel, name, np.broadcast_to(texture, g.shape))

    def heart(self) -> None:
        g, a, lm, u = self.g, self.a, self.lm, self.rng.uniform
        hs = self.heart_scale
        semi = (45.0 * hs * u(0.92, 1.08), 47.0 * hs * u(0.92, 1.08), 58.0 * hs * u(0.92, 1.08))
        angle = math.radians(u(28, 48))
        hz = max(lm["dome_r"], lm["dome_l"]) - 20.0 + 0.55 * semi[0]
        hy = min(lm["y_t"] + 62.0, lm["cc"] + lm["cay"] - 0.75 * semi[1]) + u(-4, 4)
        hx = lm["x_m"] - 18.0 - 14.0 * (hs - 1.0) + u(-4, 4)
        # the ellipse's long axis points to the patient's left and anteriorly
        lm.update(heart_c=(hz, hy, hx), heart_semi=semi, heart_angle=math.pi - angle)
        sl = g.box((hz, hy, hx), max(semi) * 1.25)
        q = ellipsoid_q(g, sl, (hz, hy, hx), semi, math.pi - angle)
        zz, _, _ = g.local(sl)
        ok = self.cavity[sl] & (zz >= self.z_d[sl[1], sl[2]][None] - 3.0)
        fat = (1.0 + u(2.0, 5.0) / np.mean(semi)) ** 2
        a.paint(sl, (q < fat) & ok, "pericardial fat", -90.0)
        a.paint(sl, (q < 1.0) & ok, "heart tissue", 40.0)

    def vessels_and_tubes(self) -> None:
        g, a, lm, u = self.g, self.a, self.lm, self.rng.uniform
        yt, yv, rv, zc, xm = lm["y_t"], lm["y_v"], lm["rv"], lm["z_car"], lm["x_m"]
        z_arch = zc + u(22, 34)
        xd, yd = xm - (0.55 * rv + 13.0), yv + 0.6 * rv + 2.0
        hz, hy, hx = lm["heart_c"]
        aorta = [
            (hz + 0.3 * lm["heart_semi"][0], hy - 8.0, hx + 26.0),
            (z_arch - 18.0, yt + 36.0, xm + 12.0),
            (z_arch, yt + 14.0, xm - 6.0),
            (z_arch - 8.0, yt - 6.0, xm - 24.0),
            (zc - 12.0, yd, xd),
            (lm["dome_l"], yd + 2.0, xd + 4.0),
            (-170.0, yd + 6.0, xd + 10.0),
        ]
        ra = u(0.9, 1.15)
        a.tube(aorta, [15 * ra, 14 * ra, 13 * ra, 12 * ra, 11.5 * ra, 11 * ra], "aorta", 42.0)
        lm["aorta"], lm["aorta_r"] = aorta, [15 * ra, 14 * ra, 13 * ra, 12 * ra, 11.5 * ra, 11 * ra]
        bif = (zc - 14.0, yt + 22.0, xm - 10.0)
        pa_r, pa_l = (zc - 20.0, yt + 6.0, xm + 48.0), (zc - 6.0, yt - 4.0, xm - 46.0)
        a.tube(
            [(hz + 0.2 * lm["heart_semi"][0], hy + 10.0, hx - 12.0), bif],
            12.0,
            "pulmonary artery",
            40.0,
        )
        a.tube([bif, pa_r], 9.5, "pulmonary artery", 40.0)
        a.tube([bif, pa_l], 9.0, "pulmonary artery", 40.0)
        lm["hilum"] = {
            "right": [pa_r, (zc - 50.0, yt + 4.0, xm + 40.0)],
            "left": [pa_l, (zc - 45.0, yt - 4.0, xm - 40.0)],
        }
        a.tube(
            [
                (lm["z_apex"] - 5.0, yt + 22.0, xm + 28.0),
                (hz + 0.6 * lm["heart_semi"][0], yt + 28.0, xm + 30.0),
            ],
            9.0,
            "superior vena cava",
            40.0,
        )
        # esophagus: behind the trachea, then left and down to the stomach
        ye = yv + rv + 6.0
        eso = [
            (175.0, yt - lm["r_t"] - 6.0, xm + 1.0),
            (zc, ye, xm - 2.0),
            (max(lm["dome_r"], lm["dome_l"]) - 10.0, ye + 8.0, xm - 12.0),
            (lm["dome_l"] - 30.0, lm["cc"] + 0.05 * lm["cay"], -0.4 * lm["cax"]),
        ]
        re = u(6.0, 8.0)
        a.tube(eso, re, "esophagus", 40.0)
        lm["esophagus"], lm["esophagus_r"] = eso, re
        # airways: all walls first, then all lumens, so joints stay open
        rt = lm["r_t"]
        carina = (zc, yt, xm)
        rb = (zc - 25.0, yt - 4.0, xm + 33.0)
        lb = (zc - 32.0, yt - 6.0, xm - 45.0)
        airways = [
            ((180.0, yt + 8.0, xm), carina, rt, "trachea"),
            (carina, rb, 0.72 * rt, "bronchie"),
            (carina, lb, 0.65 * rt, "bronchie"),
            (rb, (zc - 10.0, yt + 2.0, xm + 58.0), 0.45 * rt, "bronchie"),
            (rb, (zc - 55.0, yt - 4.0, xm + 45.0), 0.55 * rt, "bronchie"),
            (
                (zc - 55.0, yt - 4.0, xm + 45.0),
                (zc - 70.0, yt + 30.0, xm + 58.0),
                0.4 * rt,
                "bronchie",
            ),
            (
                (zc - 55.0, yt - 4.0, xm + 45.0),
                (zc - 90.0, yt - 20.0, xm + 55.0),
                0.45 * rt,
                "bronchie",
            ),
            (lb, (zc - 20.0, yt + 20.0, xm - 62.0), 0.45 * rt, "bronchie"),
            (lb, (zc - 80.0, yt - 22.0, xm - 58.0), 0.45 * rt, "bronchie"),
        ]
        wall = u(1.8, 2.8)
        for p0, p1, r, name in airways:
            a.tube([p0, p1], r + wall, name, 40.0)
        for p0, p1, r, _ in airways:
            sl = segment_box(g, p0, p1, r)
            if sl is not None:
                d, _ = segment_dist(g, sl, p0, p1)
                a.hu[sl][d <= r] = -1000.0
        lm["airways"] = airways

    def bones(self) -> None:
        g, a, lm, u = self.g, self.a, self.lm, self.rng.uniform
        z, y, x = g.broadcast()
        yv, rv, xm = lm["y_v"], lm["rv"], lm["x_m"]
        pitch = lm["rib_pitch"]
        z0 = 172.0 - u(0, pitch)
        # vertebral bodies: cylinders with a cortical rim; discs between them
        zl = (z0 - z) / pitch
        frac = zl - np.floor(zl)
        disc = frac < 4.5 / pitch
        r = np.hypot(x - xm * 0.3, y - yv)
        body = r < rv
        edge = np.minimum(np.minimum(frac, 1.0 - frac) * pitch, rv - r)
        bone_hu = np.where(edge < 2.5, u(750, 1150), u(250, 380)).astype(np.float32)
        everything = (slice(None),) * 3
        a.paint(everything, np.broadcast_to(body, g.shape) & ~disc, "thoracic vertebrae", bone_hu)
        a.paint(everything, np.broadcast_to(body, g.shape) & disc, "muscle", 80.0)
        # spinal canal and posterior arch
        yc = yv - rv - 9.0
        rc = np.hypot(x - xm * 0.3, y - yc)
        arch = ((rc < 15.0) & (y < yc + 4.0)) | (
            (np.abs(x - xm * 0.3) < 4.0) & (y < yc) & (y > yc - 32.0)
        )
        arch |= (np.abs(y - yc - 2.0) < 4.0) & (np.abs(x - xm * 0.3) < 34.0)
        arch = np.broadcast_to(arch, g.shape) & (frac > 0.15) & (frac < 0.85)
        a.paint(everything, arch, "thoracic vertebrae", 650.0)
        a.paint(everything, np.broadcast_to(rc < 8.5, g.shape), "spinal canal", 25.0)
        lm["spine"] = dict(y_v=yv, rv=rv, y_canal=yc)
        # ribs: 12 per side, each a curved bar just outside the cavity, descending anteriorly
        rho = self.rho_c
        rad = np.hypot(x, y - lm["cc"])
        d_out = (rho - 1.0) * rad / np.maximum(rho, 1e-3)  # mm outside the cavity wall
        theta = np.abs(np.arctan2(x, -(y - lm["cc"])))  # 0 posterior, pi anterior
        th0, th1 = 0.32, 2.55
        g_th = np.clip((theta - th0) / (th1 - th0), 0.0, 1.0) ** 1.2
        zz = (z0 - 8.0 - z) - lm["rib_drop"] * g_th
        k = np.round(zz / pitch)
        dz = zz - k * pitch
        q = (dz / 5.5) ** 2 + ((d_out - 7.0) / 4.5) ** 2
        reach = np.where(k >= 10, 1.6, th1)
        rib = (q < 1.0) & (k >= 0) & (k <= 11) & (theta > th0) & (theta < reach)
        rib_hu = np.where(q < 0.35, 320.0, 850.0).astype(np.float32)
        a.paint(everything, rib & (x > xm), "ribs right", rib_hu)
        a.paint(everything, rib & (x <= xm), "ribs left", rib_hu)
        # sternum: a plate in the anterior chest wall
        yant = lm["cc"] + lm["cay"]
        zs0, zs1 = lm["z_car"] + u(35, 55), max(lm["dome_r"], lm["dome_l"]) - u(0, 15)
        ws = np.where(z > zs0 - 40.0, 24.0, 13.0)
        st = (
            (np.abs(x - xm * 0.3) < ws)
            & (y > yant + 1.0)
            & (y < yant + 13.0)
            & (z < zs0)
            & (z > zs1)
        )
        st_edge = np.minimum(np.minimum(y - yant - 1.0, yant + 13.0 - y), ws - np.abs(x - xm * 0.3))
        a.paint(everything, st, "sternum", np.where(st_edge < 2.5, 800.0, 330.0).astype(np.float32))

    def neck_and_abdomen(self) -> None:
        g, a, lm, u = self.g, self.a, self.lm, self.rng.uniform
        yt, xm, rt = lm["y_t"], lm["x_m"], lm["r_t"]
        zth = lm["z_apex"] + u(0, 14)
        thy_hu = u(80, 110)
        for side in (1.0, -1.0):
            c = (zth, yt + 4.0, xm + side * (rt + 10.0))
            semi = (u(17, 24), u(9, 12), u(7, 9))
            sl = g.box(c, semi)
            if sl is not None:
                a.paint(sl, ellipsoid_q(g, sl, c, semi) < 1.0, "thyroid gland", thy_hu)
        c, semi = (zth - 10.0, yt + rt + 6.0, xm), (5.0, 4.0, 12.0)
        sl = g.box(c, semi)
        if sl is not None:
            a.paint(sl, ellipsoid_q(g, sl, c, semi) < 1.0, "thyroid gland", thy_hu)
        lm["thyroid_z"] = zth
        # upper abdomen under the diaphragm
        z, y, x = g.broadcast()
        abd = self.a.label == LABEL_ID["abdominal tissue"]
        xl = -15.0 - 0.6 * (y - lm["cc"])
        a.paint((slice(None),) * 3, abd & (x > xl), "liver", np.float32(u(52, 66)))
        c = (lm["dome_l"] - u(32, 45), lm["cc"] + 0.1 * lm["cay"], -0.45 * lm["cax"])
        semi = (u(30, 42), u(28, 38), u(30, 40))
        sl = g.box(c, semi)
        if sl is not None:
            q = ellipsoid_q(g, sl, c, semi)
            inside = self.cavity[sl] & (g.local(sl)[0] < self.z_d[sl[1], sl[2]][None] - 4.0)
            a.paint(sl, (q < 1.0) & inside, "stomach", 40.0)
            level = c[1] + semi[1] * u(-0.1, 0.4)
            inner = (q < (1.0 - 3.5 / min(semi)) ** 2) & inside
            yy = g.local(sl)[1]
            contents = np.broadcast_to(
                np.where(yy > level, -1000.0, 15.0).astype(np.float32), inner.shape
            )
            a.hu[sl][inner] = contents[inner]
        c = (lm["dome_l"] - u(40, 55), lm["cc"] - 0.55 * lm["cay"], -0.72 * lm["cax"])
        semi = (u(35, 48), u(28, 38), u(13, 18))
        sl = g.box(c, semi)
        if sl is not None:
            inside = self.cavity[sl] & (g.local(sl)[0] < self.z_d[sl[1], sl[2]][None] - 4.0)
            a.paint(
                sl, (ellipsoid_q(g, sl, c, semi) < 1.0) & inside, "spleen", np.float32(u(42, 52))
            )
        # the abdominal aorta and the esophagus run through the abdomen: repaint them on top
        a.tube(
            lm["aorta"][-3:],
            lm["aorta_r"][-2:],
            "aorta",
            42.0,
            where_names=("liver", "abdominal tissue", "spleen", "stomach"),
        )
        a.tube(
            lm["esophagus"][-2:],
            lm["esophagus_r"],
            "esophagus",
            40.0,
            where_names=("liver", "abdominal tissue", "stomach"),
        )

    def breasts(self) -> None:
        g, a, lm, u = self.g, self.a, self.lm, self.rng.uniform
        if not lm["has_breast"]:
            return
        a.has_breast = True
        front = lm["body_hi"]
        depth = min(u(22, 45), 152.0 - front)
        gland = smooth_noise(self.rng, g.shape, (6, 10, 10))
        for side, name in ((1.0, "right breast"), (-1.0, "left breast")):
            c = (u(-35, 5), front - 12.0, side * u(55, 75))
            semi = (u(38, 50), depth + 12.0, u(42, 55))
            sl = g.box(c, semi)
            if sl is None:
                continue
            q = ellipsoid_q(g, sl, c, semi)
            _, yy, _ = g.local(sl)
            ok = self.a.labels_in(sl, ("air", "subcutaneous fat")) & (yy > c[1] - 4.0)
            hu = np.where(gland[sl] > 0.3, 25.0, -100.0).astype(np.float32)
            a.paint(sl, q < 1.0, name, hu, ok)

    def small_nodes(self) -> None:
        """Normal small mediastinal lymph nodes (distractors, not findings)."""
        g, a, lm, u = self.g, self.a, self.lm, self.rng.uniform
        yt, zc, xm = lm["y_t"], lm["z_car"], lm["x_m"]
        spots = [
            (zc + 25, yt + 2, xm + 18),
            (zc - 22, yt - 6, xm - 2),
            (zc + 40, yt + 35, xm - 8),
            (zc - 5, yt + 8, xm - 30),
        ]
        for i in self.rng.choice(len(spots), size=int(self.rng.integers(1, 4)), replace=False):
            c = tuple(v + u(-4, 4) for v in spots[i])
            r = u(3.0, 4.5)
            sl = g.box(c, r)
            if sl is not None:
                a.paint(
                    sl,
                    ellipsoid_q(g, sl, c, (r * 1.3, r, r)) < 1.0,
                    "lymph node",
                    35.0,
                    a.labels_in(sl, ("mediastinal tissue",)),
                )

    def lung_texture_and_vessels(self) -> None:
        """Parenchymal texture and branching vessel trees from each hilum (HU only)."""
        g, a, lm, rng = self.g, self.a, self.lm, self.rng
        lung = np.isin(a.label, LUNG_LABELS)
        cells = (max(g.shape[0] // 6, 2), max(g.shape[1] // 8, 2), max(g.shape[2] // 8, 2))
        a.hu[lung] += 14.0 * smooth_noise(rng, g.shape, cells)[lung]
        for side in ("right", "left"):
            side_x = g.axes[2] > lm["x_m"] if side == "right" else g.axes[2] <= lm["x_m"]
            flat = np.flatnonzero(lung & side_x[None, None, :])
            if flat.size < 10:
                continue
            targets = [
                g.point(np.unravel_index(i, g.shape))
                for i in rng.choice(flat, size=min(60, flat.size), replace=False)
            ]
            roots = lm["hilum"][side]
            nodes, parent = list(roots), [-1] * len(roots)
            targets.sort(key=lambda p: min(math.dist(p, r) for r in roots))
            for p in targets:
                dists = [math.dist(p, n) for n in nodes]
                parent.append(int(np.argmin(dists)))
                nodes.append(p)
            ndesc = [1] * len(nodes)
            for i in range(len(nodes) - 1, len(roots) - 1, -1):
                if parent[i] >= 0:
                    ndesc[parent[i]] += ndesc[i]
            total = max(ndesc[: len(roots)])
            h = g.voxel_mm
            for i in range(len(roots), len(nodes)):
                p0, p1 = nodes[parent[i]], nodes[i]
                r = 0.7 + 3.8 * math.sqrt(ndesc[i] / total)
                sl = segment_box(g, p0, p1, r + h)
                if sl is None:
                    continue
                d, _ = segment_dist(g, sl, p0, p1)
                occ = np.clip((r - d) / h + 0.5, 0.0, 1.0)
                occ = np.where(lung[sl], occ, 0.0)
                a.hu[sl] += (occ * (40.0 - a.hu[sl])).astype(np.float32)

    def build(self) -> Anatomy:
        self.lm = self.sample_landmarks()
        self.a.lm = self.lm
        self.body()
        self.lungs()
        self.heart()
        self.vessels_and_tubes()
        self.bones()
        self.neck_and_abdomen()
        self.breasts()
        self.small_nodes()
        self.lung_texture_and_vessels()
        self.a.lm["cavity"] = self.cavity
        return self.a


def build_anatomy(grid: Grid, rng: np.random.Generator, heart_scale: float = 1.0) -> Anatomy:
    """Paint a random normal chest (labels + HU, no noise) on ``grid``.

    Args:
        grid: the voxel grid.
        rng: the volume's random generator (sizes, positions and shapes vary with it).
        heart_scale: 1.0 normal; about 1.3 gives cardiomegaly.
    """
    return _Builder(grid, rng, heart_scale).build()
