"""Small objects: their colours, shapes and how one is drawn (shadow, wake, body) into a window."""

from __future__ import annotations

import math

import numpy as np

from .scene import SceneObject

COLORS = {
    "white": (236, 236, 232), "black": (26, 26, 30), "grey": (128, 128, 134), "red": (204, 36, 36),
    "blue": (36, 72, 204), "green": (40, 152, 62), "yellow": (236, 206, 40), "orange": (242, 132, 30),
}
SHADOW_FACTOR = 0.5


def object_bbox(cx, cy, length, width, angle, category, img_w, img_h):
    """Axis-aligned box (x1, y1, x2, y2) of the object's body, clipped to the image."""
    if category == "storage tank":
        hx = hy = length / 2
    else:
        c, s = abs(math.cos(angle)), abs(math.sin(angle))
        hx = c * length / 2 + s * width / 2
        hy = s * length / 2 + c * width / 2
    x1, y1 = max(0, int(math.floor(cx - hx))), max(0, int(math.floor(cy - hy)))
    x2, y2 = min(img_w, int(math.ceil(cx + hx))), min(img_h, int(math.ceil(cy + hy)))
    return (x1, y1, x2, y2)


def shadow_offset(obj: SceneObject) -> float:
    # storage tanks are tall: long shadows; the sun is in the north-west
    return max(1.0, (0.22 if obj.category == "storage tank" else 0.1) * obj.size_px)


def draw_extent(obj: SceneObject):
    """Pixel box touched when drawing the object (body, shadow, wake)."""
    pad = shadow_offset(obj) + 2 + (3.0 * obj.size_px if obj.wake else 0)
    x1, y1, x2, y2 = obj.bbox
    return (x1 - pad, y1 - pad, x2 + pad, y2 + pad)


def _shape_mask(obj: SceneObject, u, v):
    """Body mask and a detail mask (superstructure, windscreen, rim) in object coordinates."""
    L, W = float(obj.size_px), float(obj.width_px)
    shape = obj.shape
    if obj.category == "storage tank":
        r = np.hypot(u, v)
        return r < L / 2, (r > 0.40 * L) | (r < 0.12 * L)
    if obj.category == "helicopter":
        body = ((u - 0.15 * L) / (0.22 * L)) ** 2 + (v / (0.11 * L)) ** 2 < 1
        boom = (u < 0) & (u > -0.5 * L) & (np.abs(v) < 0.035 * L + 0.5)
        a, b = (u - 0.15 * L + v) / 1.414, (v - u + 0.15 * L) / 1.414
        blades = ((np.abs(a) < 0.5 * L) & (np.abs(b) < 0.6)) | ((np.abs(b) < 0.5 * L) & (np.abs(a) < 0.6))
        return body | boom | blades, blades & ~body
    if obj.category == "aircraft":
        fus_half = max(1.0, 0.06 * L)
        nose = np.clip((L / 2 - u) / (0.12 * L), 0, 1)
        fuselage = (np.abs(u) < L / 2) & (np.abs(v) < fus_half * np.sqrt(nose))
        if shape == "triangle":
            wing = (u < 0.2 * L) & (u > -0.45 * L) & (np.abs(v) < (0.2 * L - u) * 0.72)
            return fuselage | wing, fuselage & (u > 0.3 * L)
        sweep = u + 0.25 * np.abs(v)
        wing = (np.abs(sweep - 0.02 * L) < 0.09 * L) & (np.abs(v) < W / 2)
        tail = (np.abs(sweep + 0.42 * L) < 0.05 * L) & (np.abs(v) < 0.17 * L)
        return fuselage | wing | tail, fuselage & (u > 0.36 * L)
    if obj.category == "ship" and shape == "elongated":
        taper = np.clip((L / 2 - u) / (0.3 * L), 0, 1)
        hull = (u > -L / 2) & (np.abs(v) < (W / 2) * np.sqrt(taper))
        bridge = (u > -0.38 * L) & (u < -0.18 * L) & (np.abs(v) < 0.32 * W)
        return hull, bridge
    body = (np.abs(u) < L / 2) & (np.abs(v) < W / 2)
    if obj.category == "vehicle":
        return body, body & (u > 0.12 * L) & (u < 0.28 * L)
    if obj.category == "ship":       # barge: open cargo hold
        return body, body & (np.abs(u) < 0.4 * L) & (np.abs(v) < 0.3 * W)
    return body, body & ((np.floor(u) % 3) == 0)     # container ribs


def _local(obj: SceneObject, x0, y0, box, dx=0.0, dy=0.0):
    bx1, by1, bx2, by2 = box
    xs = np.arange(bx1, bx2, dtype=np.float32)[None, :] + 0.5 - obj.cx - dx
    ys = np.arange(by1, by2, dtype=np.float32)[:, None] + 0.5 - obj.cy - dy
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    return xs * c + ys * s, -xs * s + ys * c


def draw_object(rgb: np.ndarray, x0: int, y0: int, obj: SceneObject) -> None:
    """Paint one object into rgb (float32 [h, w, 3], window origin x0, y0), clipped to the window."""
    h, w = rgb.shape[:2]
    ex1, ey1, ex2, ey2 = draw_extent(obj)
    box = (max(int(ex1), x0), max(int(ey1), y0), min(int(math.ceil(ex2)), x0 + w),
           min(int(math.ceil(ey2)), y0 + h))
    if box[0] >= box[2] or box[1] >= box[3]:
        return
    view = rgb[box[1] - y0:box[3] - y0, box[0] - x0:box[2] - x0]
    if obj.wake:
        u, v = _local(obj, x0, y0, box)
        behind = -obj.size_px / 2 - u
        spread = obj.width_px / 2 * (0.5 + 0.7 * behind / obj.size_px)
        wake = (behind > 0) & (behind < 3.0 * obj.size_px) & (np.abs(v) < spread)
        edge = wake & (np.abs(v) > spread * 0.55)
        fade = np.clip(1 - behind / (3.0 * obj.size_px), 0, 1)[..., None]
        view[:] = np.where(wake[..., None], view + (235 - view) * (0.22 + 0.25 * edge[..., None]) * fade, view)
    off = shadow_offset(obj)
    u, v = _local(obj, x0, y0, box, off, off)
    shadow, _ = _shape_mask(obj, u, v)
    view[shadow] *= SHADOW_FACTOR
    u, v = _local(obj, x0, y0, box)
    body, detail = _shape_mask(obj, u, v)
    colour = np.array(COLORS[obj.color], dtype=np.float32)
    # a little shading across the object gives it volume
    shading = 1.0 - 0.12 * np.clip(np.abs(v) / max(obj.width_px / 2, 1.0), 0, 1)
    view[body] = colour[None, :] * shading[body][:, None]
    if detail.any():
        accent = np.array(COLORS["grey" if obj.color == "white" else "white"], dtype=np.float32)
        if obj.category in ("vehicle", "storage tank", "container"):
            accent = colour * 0.72
        view[detail & body] = accent
