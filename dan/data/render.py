"""Scenes of the embedded benchmark: sampling objects and drawing them (with clutter) to JPEG.

A scene holds 3-6 objects, each a shape in a palette colour and one of two sizes, placed without overlap on a
textured, noisy background with small distractor blobs that are not objects. Sizes are relative to the short
image side so every profile's resolution gives the same scene statistics.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (40, 165, 55), "blue": (35, 75, 215), "yellow": (235, 205, 30),
    "purple": (140, 55, 175), "orange": (245, 135, 25), "gray": (120, 120, 120), "brown": (125, 75, 35),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
SIZES = ("small", "large")
RADIUS = {"small": (0.055, 0.07), "large": (0.10, 0.125)}  # circumradius as a fraction of the short side
COLOR_JITTER = 14  # +- per channel, uniform


@dataclass
class SceneObject:
    """One object; ``cx, cy, r`` in pixels (r = circumradius), ``bbox`` = tight [x, y, w, h] of the drawing.

    ``keepout`` = [x0, y0, x1, y1] that distractors keep 3 px away from (None: the bbox's corners)."""

    id: int
    shape: str
    color: str
    size: str
    cx: float
    cy: float
    r: float
    rgb: tuple[int, int, int]
    bbox: list[int]
    keepout: list[int] | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "shape": self.shape, "color": self.color, "size": self.size, "bbox": self.bbox}


@dataclass
class Scene:
    width: int
    height: int
    objects: list[SceneObject]

    @property
    def tol_x(self) -> float:
        """Horizontal offsets up to this many pixels are too small to call left/right."""
        return 0.035 * self.width

    @property
    def tol_y(self) -> float:
        return 0.035 * self.height


def polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Outline of ``shape`` (not circle) with circumradius ``r``; each shape covers its bbox centre."""
    if shape == "square":
        h = 0.8 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.866 * r, cy + 0.5 * r), (cx - 0.866 * r, cy + 0.5 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    if shape == "cross":
        t, a = 0.32 * r, 0.9 * r
        return [(cx - t, cy - a), (cx + t, cy - a), (cx + t, cy - t), (cx + a, cy - t), (cx + a, cy + t),
                (cx + t, cy + t), (cx + t, cy + a), (cx - t, cy + a), (cx - t, cy + t), (cx - a, cy + t),
                (cx - a, cy - t), (cx - t, cy - t)]
    raise ValueError(f"unknown shape {shape!r}")


def _extent(shape: str, cx: float, cy: float, r: float) -> tuple[float, float, float, float]:
    """(min x, min y, max x, max y) of the outline."""
    pts = [(cx - r, cy - r), (cx + r, cy + r)] if shape == "circle" else polygon(shape, cx, cy, r)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def _bbox(shape: str, cx: float, cy: float, r: float) -> list[int]:
    """The whole pixels that PIL's drawing of the shape fills: it fills pixel k (the square [k, k + 1)) when the
    shape reaches into it, its right and bottom edges included (an ellipse over 7..13 fills columns 7 to 13), so
    x0 = floor(min x) and x1 = floor(max x) + 1 (ceil(max x) left out the last column where max x was whole)."""
    lo_x, lo_y, hi_x, hi_y = _extent(shape, cx, cy, r)
    x0, y0 = math.floor(lo_x), math.floor(lo_y)
    return [x0, y0, math.floor(hi_x) + 1 - x0, math.floor(hi_y) + 1 - y0]


def sample_scene(rng: np.random.Generator, width: int, height: int, min_objects: int = 3,
                 max_objects: int = 6) -> Scene:
    """Random non-overlapping objects; each scene draws from a few colours and shapes so repeats are common."""
    side = min(width, height)
    n = int(rng.integers(min_objects, max_objects + 1))
    colors = [COLORS[i] for i in rng.choice(len(COLORS), size=int(rng.integers(2, 6)), replace=False)]
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), size=int(rng.integers(2, 5)), replace=False)]
    objects: list[SceneObject] = []
    margin = 0.02 * side
    for _ in range(n):
        size = SIZES[int(rng.integers(2))]
        lo, hi = RADIUS[size]
        r = float(rng.uniform(lo, hi)) * side
        for _try in range(60):
            cx = float(rng.uniform(r + margin, width - r - margin))
            cy = float(rng.uniform(r + margin, height - r - margin))
            if all(math.hypot(cx - o.cx, cy - o.cy) > r + o.r + margin for o in objects):
                break
        else:
            continue  # no room left for this one
        shape = shapes[int(rng.integers(len(shapes)))]
        color = colors[int(rng.integers(len(colors)))]
        base = np.array(PALETTE[color])
        rgb = tuple(int(v) for v in np.clip(base + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255))
        # the distractors' keep-out zone as generator version 1 had it (the unrounded outline's extent rounded
        # outward), so that the images stay the same; the bbox is of the drawing, i.e. of the rounded centre and
        # radius that render_scene draws (the unrounded ones put 1 px of some objects outside their box)
        lo_x, lo_y, hi_x, hi_y = _extent(shape, cx, cy, r)
        keepout = [math.floor(lo_x), math.floor(lo_y), math.ceil(hi_x), math.ceil(hi_y)]
        cx, cy, r = round(cx, 2), round(cy, 2), round(r, 2)
        objects.append(SceneObject(id=len(objects), shape=shape, color=color, size=size, cx=cx, cy=cy, r=r, rgb=rgb,
                                   bbox=_bbox(shape, cx, cy, r), keepout=keepout))
    return Scene(width=width, height=height, objects=objects)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Light low-saturation gradient with faint stripes -> float32 [H, W, 3] (separable, so cheap)."""
    c0 = (rng.uniform(160, 225) + rng.uniform(-18, 18, 3)).astype(np.float32)
    c1 = (rng.uniform(150, 225) + rng.uniform(-18, 18, 3)).astype(np.float32)
    xs = np.arange(width, dtype=np.float32)  # [W]
    ys = np.arange(height, dtype=np.float32)[:, None]  # [H, 1]
    ang = rng.uniform(0, 2 * math.pi)
    t = (np.float32(np.cos(ang) / width) * xs + np.float32(np.sin(ang) / height) * ys + 1) / 2  # [H, W] in [0, 1]
    img = c0 + (c1 - c0) * t[..., None]  # [H, W, 3]
    stripes = np.zeros((height, width), dtype=np.float32)
    for _ in range(2):
        a2, freq, amp = rng.uniform(0, math.pi), rng.uniform(0.03, 0.12), rng.uniform(3, 9)
        u = np.float32(freq * np.cos(a2)) * xs + np.float32(rng.uniform(0, 6.3))  # [W]
        v = np.float32(freq * np.sin(a2)) * ys  # [H, 1]
        stripes += np.float32(amp) * (np.sin(u) * np.cos(v) + np.cos(u) * np.sin(v))  # sin(u + v)
    img += stripes[..., None]
    return img


def _distractors(draw: ImageDraw.ImageDraw, rng: np.random.Generator, scene: Scene) -> None:
    """Small blobs and short lines away from every object's box (clutter that is not an object)."""
    side = min(scene.width, scene.height)
    zones = [o.keepout or [o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]] for o in scene.objects]
    boxes = [(x0 - 3, y0 - 3, x1 + 3, y1 + 3) for x0, y0, x1, y1 in zones]
    for _ in range(int(rng.integers(4, 13))):
        rad = float(rng.uniform(0.006, 0.017)) * side
        x, y = float(rng.uniform(0, scene.width)), float(rng.uniform(0, scene.height))
        if any(b[0] - rad <= x <= b[2] + rad and b[1] - rad <= y <= b[3] + rad for b in boxes):
            continue
        if rng.random() < 0.5:
            fill = PALETTE[COLORS[int(rng.integers(len(COLORS)))]]
        else:
            fill = tuple(int(v) for v in rng.integers(40, 230, 3))
        if rng.random() < 0.7:
            draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=fill)
        else:
            ang = rng.uniform(0, math.pi)
            dx, dy = 2.5 * rad * math.cos(ang), 2.5 * rad * math.sin(ang)
            if not any(b[0] <= x + dx <= b[2] and b[1] <= y + dy <= b[3] for b in boxes):
                draw.line([x, y, x + dx, y + dy], fill=fill, width=1)


def render_scene(scene: Scene, rng: np.random.Generator, quality: int = 90) -> bytes:
    """Draw ``scene`` and return RGB JPEG bytes (deterministic for a given ``rng`` state)."""
    bg = _background(rng, scene.width, scene.height)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    _distractors(draw, rng, scene)
    for o in scene.objects:
        if o.shape == "circle":
            draw.ellipse([o.cx - o.r, o.cy - o.r, o.cx + o.r, o.cy + o.r], fill=o.rgb)
        else:
            draw.polygon(polygon(o.shape, o.cx, o.cy, o.r), fill=o.rgb)
    sigma = np.float32(rng.uniform(3.0, 8.0))
    arr = np.asarray(img, dtype=np.float32)
    arr += sigma * rng.standard_normal(arr.shape, dtype=np.float32) + np.float32(0.5)
    out = Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def relation_sets(scene: Scene, anchor: SceneObject, rel: str) -> tuple[list[SceneObject], list[SceneObject]]:
    """Objects clearly in relation ``rel`` ("left", "right", "above", "below") to ``anchor``, and objects too
    close to call (centre offset within the tolerance) -- a question about ``rel`` needs the latter empty."""
    clear, unsure = [], []
    for o in scene.objects:
        if o.id == anchor.id:
            continue
        if rel in ("left", "right"):
            d, tol = (anchor.cx - o.cx) if rel == "left" else (o.cx - anchor.cx), scene.tol_x
        elif rel in ("above", "below"):
            d, tol = (anchor.cy - o.cy) if rel == "above" else (o.cy - anchor.cy), scene.tol_y
        else:
            raise ValueError(f"unknown relation {rel!r}")
        if d > tol:
            clear.append(o)
        elif d > -tol:
            unsure.append(o)
    return clear, unsure
