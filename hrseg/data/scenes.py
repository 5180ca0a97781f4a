"""Procedural two-domain street scenes: the layout model, the two appearances and the realism mask.

No real dataset can be downloaded where hrseg is built and tested, so this
module draws small street scenes whose *labels* follow one layout model and
whose *appearance* follows the principle the method relies on. The design
follows that principle and is judged only by what target-only, direct joint
and oracle training (weight = realism mask) score on it; it must never be
tuned to make a weighting scheme win:

Layout (both domains, same distribution): a horizon and vanishing point; a
perspective road (with dashed lane markings) between sidewalks; terrain
verges; building facades with windows along both sides, shrinking towards
the vanishing point; trees; walls and fences along the sidewalk; poles with
traffic signs and lights; cars, trucks and buses on the road, persons,
riders with bicycles or motorcycles; "static" clutter (an ignored labelId).
Object sizes scale with their distance below the horizon. 18 of the 19
classes occur (all but train).

Appearance: the target ("real", Cityscapes format) has ONE appearance model:
every class has its own base colour, texture (asphalt noise, paving grid,
window grid, bricks, slats, foliage, clouds ...), per-instance tint, image
lighting (gain, colour temperature, vertical falloff, cast shadows) and
sensor noise.

The source ("synthetic", GTAV format) uses the same layout and, area by
area, one of two appearances. The principle: a deviating area is one whose
appearance/label relation contradicts the target, and nothing else sets it
apart.

- *realistic*: exactly the target model, so it teaches what the target needs;
- *deviating*: the class is drawn with the target look of the class that
  shares its place in target scenes (``DEVIATING_LOOK``: the largest overlap
  of the two classes' position histograms; road looks like car, sidewalk and
  terrain like person, building like vegetation, car like bus ...). Its
  lighting, blur and sensor noise are the target's. Neither its place nor
  any renderer signature gives it away, so a model that learns "car look
  on the road means road" from it unlearns cars where the target has them.
- deviating areas outnumber realistic ones (about 58 % of source pixels,
  ``IMAGE_KIND_P``): used unselected, the source is worth little, which is
  the setting where selecting its realistic areas pays.

Where realism varies, at three levels so every weighting level has
something to find:

- image: each source image draws a realistic share rho from a mixture of
  mostly-realistic, mixed and mostly-deviating images;
- region: a smooth random field, thresholded at its rho-quantile, makes
  large blobs realistic or deviating;
- instance/pixel: every object (car, person, pole, facade ...) flips its
  realism with probability ``INSTANCE_FLIP``, so thin structures and single
  objects inside a region differ from their surroundings.

docs/benchmark-scenes.md records why and what it measures.

Every source scene carries the ground-truth realism of each pixel (1
realistic, 0 deviating, 255 on ignored labels); ``synthetic.py`` writes the
scenes in the GTAV / Cityscapes formats. Each image is drawn from its own generator seeded by (seed, domain, index),
so the output is deterministic for a seed and independent of the worker count.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hrseg.data.labels import IGNORE_INDEX, LABEL_TO_TRAIN

# labelIds used when drawing
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN = 7, 8, 11, 12, 13, 17, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS = 21, 22, 23, 24, 25, 26, 27, 28
MOTORCYCLE, BICYCLE, STATIC = 32, 33, 4

INSTANCE_FLIP = 0.2
# image kinds (mostly realistic, mixed, mostly deviating): deviating areas outnumber realistic ones,
# so the source used unselected is worth little, as in the paper's setting
IMAGE_KIND_P = (0.25, 0.25, 0.5)
NOISE_SIGMA = 4.0  # sensor noise, the same in both domains and both kinds of area
GENERATOR = "hrseg-scenes/5"  # stamped into synthetic.json; bump whenever the drawn scenes change
SOURCE_ASPECT = 9 / 16  # GTAV frames are 16:9, Cityscapes 2:1

# trainId -> trainId whose TARGET look a deviating area of that class takes: the class whose
# positions in target scenes overlap this class's most (Bhattacharyya coefficient of the two
# per-class position histograms), so the place of a deviating area never tells it apart.
# train (16) is never drawn and takes the look of its own kind, bus.
DEVIATING_LOOK: dict[int, int] = {
    0: 13, 1: 11, 2: 8, 3: 4, 4: 3, 5: 9, 6: 7, 7: 6, 8: 2, 9: 11,
    10: 2, 11: 3, 12: 13, 13: 15, 14: 15, 15: 14, 16: 15, 17: 13, 18: 17,
}

# target appearance: base RGB and per-instance colour variation per trainId
BASE_RGB: dict[int, tuple[float, float, float]] = {
    0: (88, 86, 92), 1: (168, 158, 146), 2: (150, 120, 100), 3: (190, 175, 140), 4: (120, 100, 70),
    5: (70, 70, 75), 6: (35, 35, 35), 7: (215, 190, 40), 8: (60, 120, 45), 9: (150, 150, 80),
    10: (120, 165, 220), 11: (150, 60, 70), 12: (90, 40, 120), 13: (40, 60, 150), 14: (200, 200, 205),
    15: (210, 120, 30), 16: (120, 120, 130), 17: (20, 20, 30), 18: (170, 30, 30), 255: (110, 80, 50),
}
TINT: dict[int, float] = {0: 6, 1: 10, 2: 45, 3: 15, 4: 15, 5: 8, 6: 5, 7: 20, 8: 15, 9: 12, 10: 10,
                          11: 60, 12: 40, 13: 70, 14: 25, 15: 30, 16: 10, 17: 20, 18: 40, 255: 30}


@dataclass
class Scene:
    """One drawn scene: labelIds, RGB image and (source only) the realism mask."""

    label_ids: np.ndarray  # (H, W) uint8 Cityscapes labelIds
    image: np.ndarray  # (H, W, 3) uint8 RGB
    realism: np.ndarray | None  # (H, W) uint8


class _Canvas:
    """Label, instance and per-instance box maps drawn in painter's order."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.label = np.full((h, w), SKY, dtype=np.uint8)
        self.inst = np.zeros((h, w), dtype=np.int32)
        self.boxes: list[tuple[float, float]] = [(0.0, float(h))]  # (top, bottom) per instance

    def _new(self, top: float, bottom: float) -> int:
        self.boxes.append((top, max(bottom, top + 1.0)))
        return len(self.boxes) - 1

    def poly(self, pts: np.ndarray, label: int, top: float | None = None, bottom: float | None = None) -> int:
        pts = np.round(np.asarray(pts, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
        iid = self._new(float(pts[:, 0, 1].min()) if top is None else top,
                        float(pts[:, 0, 1].max()) if bottom is None else bottom)
        cv2.fillPoly(self.label, [pts], int(label))
        cv2.fillPoly(self.inst, [pts], iid)
        return iid

    def rect(self, x0: float, y0: float, x1: float, y1: float, label: int) -> int:
        return self.poly(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), label)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, label: int, iid: int | None = None) -> int:
        if iid is None:
            iid = self._new(cy - ry, cy + ry)
        c, a = (int(round(cx)), int(round(cy))), (max(1, int(round(rx))), max(1, int(round(ry))))
        cv2.ellipse(self.label, c, a, 0, 0, 360, int(label), -1)
        cv2.ellipse(self.inst, c, a, 0, 0, 360, iid, -1)
        return iid

    def line(self, x0: float, y0: float, x1: float, y1: float, thick: int, label: int) -> int:
        iid = self._new(min(y0, y1), max(y0, y1))
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
        cv2.line(self.label, p0, p1, int(label), max(1, thick))
        cv2.line(self.inst, p0, p1, iid, max(1, thick))
        return iid


def _layout(rng: np.random.Generator, w: int, h: int) -> tuple[_Canvas, np.ndarray]:
    """Draw the labelIds of one street scene; returns the canvas and the lane-marking mask."""
    cv = _Canvas(w, h)
    yh = h * rng.uniform(0.36, 0.5)
    vx = w * rng.uniform(0.35, 0.65)
    depth = lambda y: np.clip((y - yh) / (h - yh), 0.0, 1.0)  # noqa: E731 - 0 at horizon, 1 at bottom

    # road edges at the bottom row; sidewalks and verges further out
    left_b, right_b = vx - w * rng.uniform(0.3, 0.55), vx + w * rng.uniform(0.3, 0.55)
    walk = w * rng.uniform(0.15, 0.3)
    edge = lambda xb, t: vx + (xb - vx) * t  # noqa: E731 - x of a ground line at depth t

    # building facades on both sides, from the image edge towards the vanishing point
    for side in (-1, 1):
        outer = 0.0 if side < 0 else float(w)
        x = outer
        while (x - vx) * side > w * 0.04:
            span = w * rng.uniform(0.08, 0.22)
            x_next = x - side * span
            if (x_next - vx) * side < w * 0.02:
                x_next = vx + side * w * 0.02
            tops = [yh - (abs(xx - vx) / (w / 2)) * h * rng.uniform(0.25, 0.7) - h * 0.03 for xx in (x, x_next)]
            base = [yh + (abs(xx - vx) / (w / 2)) * h * 0.3 + 1 for xx in (x, x_next)]
            cv.poly(np.array([[x, tops[0]], [x_next, tops[1]], [x_next, base[1]], [x, base[0]]]), BUILDING)
            x = x_next
    # trees in front of the facades
    for _ in range(rng.integers(1, 6)):
        tx = w * rng.uniform(0, 1)
        t = rng.uniform(0.15, 0.6)
        ty = yh + t * (h - yh) * 0.3
        r = h * 0.22 * t + 2
        trunk = cv.line(tx, ty, tx, ty - 1.6 * r, max(1, int(r * 0.2)), VEGETATION)
        cv.ellipse(tx, ty - 1.8 * r, r * rng.uniform(0.8, 1.3), r, VEGETATION, iid=trunk)

    # ground: terrain verge / sidewalk / road, as wedges from the vanishing point
    ys = np.array([yh, h + 1])
    for side, xb in ((-1, left_b), (1, right_b)):
        far = xb + side * (walk + w * rng.uniform(0.5, 1.5))
        verge = TERRAIN if rng.random() < 0.6 else SIDEWALK
        cv.poly(np.array([[vx, yh], [edge(far, 1.02), h + 1], [edge(xb, 1.02), h + 1]]), verge)
        cv.poly(np.array([[vx, yh], [edge(xb + side * walk, 1.02), h + 1], [edge(xb, 1.02), h + 1]]), SIDEWALK)
    cv.poly(np.array([[vx - 0.5, ys[0]], [vx + 0.5, ys[0]], [right_b, ys[1]], [left_b, ys[1]]]), ROAD)
    marking = np.zeros((h, w), dtype=np.uint8)
    for t0 in np.arange(0.04, 1.0, 0.16) + rng.uniform(0, 0.08):
        y0, y1 = yh + (h - yh) * t0 ** 1.6, yh + (h - yh) * min(1.0, t0 + 0.07) ** 1.6
        cv2.line(marking, (int(vx), int(y0)), (int(vx), int(y1)), 1, max(1, int(3 * depth(y1))))

    # walls and fences along the outer sidewalk edge
    for side, xb in ((-1, left_b), (1, right_b)):
        if rng.random() < 0.6:
            t0, t1 = sorted(rng.uniform(0.15, 1.0, 2))
            xo = xb + side * walk
            y0, y1 = yh + t0 * (h - yh), yh + t1 * (h - yh)
            hh = h * 0.18
            cv.poly(np.array([[edge(xo, t0), y0], [edge(xo, t1), y1],
                              [edge(xo, t1), y1 - hh * t1], [edge(xo, t0), y0 - hh * t0]]),
                    WALL if rng.random() < 0.5 else FENCE)

    # poles with signs and lights on the sidewalks
    for _ in range(rng.integers(1, 5)):
        side, xb = ((-1, left_b), (1, right_b))[int(rng.integers(0, 2))]
        t = rng.uniform(0.2, 1.0)
        x = edge(xb + side * walk * rng.uniform(0.3, 0.8), t)
        y = yh + t * (h - yh)
        ph = h * 0.55 * t + 3
        cv.line(x, y, x, y - ph, max(1, int(round(2.5 * t))), POLE)
        s = max(2.0, h * 0.06 * t)
        if rng.random() < 0.5:
            cv.rect(x - s, y - ph - s, x + s, y - ph + s * 0.6, SIGN)
        else:
            cv.rect(x - s * 0.5, y - ph - s * 1.6, x + s * 0.5, y - ph + s * 0.4, LIGHT)

    # static clutter (labelId 4: ignored in training and evaluation)
    if rng.random() < 0.5:
        side, xb = ((-1, left_b), (1, right_b))[int(rng.integers(0, 2))]
        t = rng.uniform(0.3, 1.0)
        x, y, s = edge(xb + side * walk * 0.5, t), yh + t * (h - yh), h * 0.05 * t + 1
        cv.rect(x - s, y - 2 * s, x + s, y, STATIC)

    # road users, far ones first so nearer ones occlude them
    users = []
    for _ in range(rng.integers(1, 7)):
        users.append((rng.uniform(0.1, 0.9), "vehicle"))
    for _ in range(rng.integers(0, 5)):
        users.append((rng.uniform(0.15, 1.0), "person"))
    for t, kind in sorted(users):
        y = yh + t * (h - yh)
        if kind == "vehicle":
            kindv = rng.choice([CAR, CAR, CAR, CAR, CAR, CAR, TRUCK, BUS, BICYCLE, MOTORCYCLE])
            lo, hi = edge(left_b, t), edge(right_b, t)
            if kindv in (BICYCLE, MOTORCYCLE):
                x = rng.uniform(lo, hi)
                s = h * 0.1 * t + 1
                cv.ellipse(x, y - s * 0.6, s * 0.9, s * 0.6, int(kindv))
                cv.rect(x - s * 0.3, y - s * 2.6, x + s * 0.3, y - s * 1.0, RIDER)
                cv.ellipse(x, y - s * 2.9, s * 0.3, s * 0.3, RIDER)
                continue
            vw = w * 0.3 * t * (1.2 if kindv != CAR else 1.0) + 2
            vh = vw * (0.55 if kindv == CAR else 0.75)
            x = rng.uniform(lo, max(lo, hi - vw))
            if kindv == CAR:
                body = cv.rect(x, y - vh * 0.6, x + vw, y, CAR)
                roof = [[x + vw * 0.15, y - vh * 0.6], [x + vw * 0.25, y - vh],
                        [x + vw * 0.75, y - vh], [x + vw * 0.85, y - vh * 0.6]]
                cv.poly(np.array(roof), CAR)
                cv.boxes[body] = (y - vh, y)
            else:
                cv.rect(x, y - vh, x + vw, y, int(kindv))
        else:
            side, xb = ((-1, left_b), (1, right_b))[int(rng.integers(0, 2))]
            x = edge(xb + side * walk * rng.uniform(0.1, 0.9), t)
            ph = h * 0.35 * t + 3
            iid = cv.rect(x - ph * 0.14, y - ph * 0.82, x + ph * 0.14, y, PERSON)
            cv.ellipse(x, y - ph * 0.9, ph * 0.09, ph * 0.1, PERSON, iid=iid)
            cv.boxes[iid] = (y - ph, y)
    return cv, marking


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth random field in [-1, 1]-ish, upsampled from a coarse grid."""
    coarse = rng.standard_normal((cells[1], cells[0])).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _textures(rng: np.random.Generator, w: int, h: int) -> dict[int, np.ndarray]:
    """Per-trainId brightness texture in roughly [-1, 1] (shared by both appearances of the image)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fine = rng.standard_normal((h, w)).astype(np.float32)
    fine_blur = cv2.GaussianBlur(fine, (0, 0), 0.8)
    blot = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.5) * 2.5
    period = max(4, w // 40)
    grid = (((xx % (2 * period)) < 1) | ((yy % period) < 1)).astype(np.float32)
    windows = ((((xx + 1) % (period + 2)) < period * 0.6) & ((yy % (period + 3)) < period * 0.7)).astype(np.float32)
    bricks = ((yy % 3) < 1).astype(np.float32)
    slats = ((xx % 3) < 1).astype(np.float32)
    clouds = _smooth_noise(rng, w, h, (6, 3))
    sky_grad = np.clip(yy / (0.5 * h), 0, 1)
    return {
        0: 0.25 * fine_blur,
        1: -0.35 * grid + 0.1 * fine_blur,
        2: -0.45 * windows + 0.08 * fine_blur,
        3: -0.3 * bricks + 0.1 * fine_blur,
        4: 0.45 * slats - 0.2,
        8: 0.35 * blot,
        9: 0.18 * blot + 0.1 * fine_blur,
        10: 0.25 * sky_grad + 0.12 * clouds,
    }


def _render(
    rng: np.random.Generator, cv: _Canvas, marking: np.ndarray, realism: np.ndarray | None
) -> np.ndarray:
    """RGB image of a canvas: each pixel takes the target look of its class, or of DEVIATING_LOOK[class]."""
    h, w = cv.h, cv.w
    train = LABEL_TO_TRAIN[cv.label].astype(np.int64)
    look = train.copy()
    if realism is not None:
        deviating = realism == 0
        table = np.arange(256)
        for src, dst in DEVIATING_LOOK.items():
            table[src] = dst
        look[deviating] = table[train[deviating]]
    boxes = np.array(cv.boxes, dtype=np.float32)
    top, bottom = boxes[cv.inst, 0], boxes[cv.inst, 1]
    yy = np.mgrid[0:h, 0:w][0].astype(np.float32)
    rel_y = np.clip((yy - top) / np.maximum(bottom - top, 1.0), 0.0, 1.0)
    tint_dir = rng.standard_normal((len(cv.boxes), 3)).astype(np.float32)
    tint_dir /= np.maximum(np.abs(tint_dir).max(axis=1, keepdims=True), 1e-6)
    textures = _textures(rng, w, h)

    img = np.zeros((h, w, 3), dtype=np.float32)
    for c in np.unique(look):
        m = look == c
        base = np.array(BASE_RGB.get(int(c), BASE_RGB[255]), dtype=np.float32)
        col = base[None, :] + tint_dir[cv.inst[m]] * TINT.get(int(c), 20.0)
        tex = textures.get(int(c))
        shade = 1.0 + (tex[m] if tex is not None else 0.0)
        ry = rel_y[m]
        if c == 13:  # car: dark windows on top, darker lower body
            shade = shade * np.where(ry < 0.35, 0.35, np.where(ry > 0.85, 0.6, 1.0))
        elif c in (11, 12):  # person, rider: skin head, dark legs
            col = np.where((ry < 0.18)[:, None], np.array([225, 180, 150], np.float32), col)
            shade = shade * np.where(ry > 0.55, 0.45, 1.0)
        elif c in (14, 15):  # truck, bus: window band
            shade = shade * np.where((ry > 0.15) & (ry < 0.4), 0.4, 1.0)
        elif c == 6:  # traffic light: a bright lamp in the upper third
            col = np.where(((ry > 0.15) & (ry < 0.4))[:, None], np.array([240, 200, 60], np.float32), col)
        elif c == 0:  # road: lane markings
            col = np.where((marking[m] > 0)[:, None], np.array([235, 235, 225], np.float32), col)
        img[m] = col * shade[:, None] if np.ndim(shade) else col * shade

    # lighting shared by both appearances: gain, colour temperature, vertical falloff, cast shadow
    gain = rng.uniform(0.75, 1.2)
    temp = 1.0 + rng.uniform(-0.06, 0.06) * np.array([1.0, 0.0, -1.0], dtype=np.float32)
    falloff = 1.0 - 0.15 * (yy / h)
    img *= (gain * falloff)[:, :, None] * temp[None, None, :]
    if rng.random() < 0.7:
        x0 = rng.uniform(-0.2, 0.8) * w
        shadow = np.zeros((h, w), dtype=np.uint8)
        pts = np.array([[x0, h * 0.45], [x0 + w * 0.25, h * 0.45], [x0 + w * 0.6, h], [x0 + w * 0.2, h]], np.int32)
        cv2.fillPoly(shadow, [pts], 1)
        ground = np.isin(cv.label, (ROAD, SIDEWALK, TERRAIN))
        img[(shadow > 0) & ground] *= 0.6
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img += rng.standard_normal((h, w, 3)).astype(np.float32) * NOISE_SIGMA
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _realism(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    """Ground-truth realism: image-level share, region-level blobs, instance-level flips."""
    h, w = cv.h, cv.w
    kind = rng.choice(3, p=IMAGE_KIND_P)
    rho = (rng.uniform(0.85, 1.0), rng.uniform(0.35, 0.65), rng.uniform(0.0, 0.15))[int(kind)]
    field = _smooth_noise(rng, w, h, (6, 4))
    real = field <= np.quantile(field, rho) if rho > 0 else np.zeros((h, w), dtype=bool)
    flips = rng.random(len(cv.boxes)) < INSTANCE_FLIP
    flips[0] = False  # instance 0 is the sky background
    real = real ^ flips[cv.inst]
    out = real.astype(np.uint8)
    out[LABEL_TO_TRAIN[cv.label] == IGNORE_INDEX] = IGNORE_INDEX
    return out


def draw_scene(seed: int, domain: str, index: int, size: tuple[int, int]) -> Scene:
    """One scene of ``domain`` ("source" or "target"), a pure function of (seed, domain, index, size)."""
    rng = np.random.default_rng([seed, 0 if domain == "source" else 1, index])
    w, h = size
    cv, marking = _layout(rng, w, h)
    realism = _realism(rng, cv) if domain == "source" else None
    image = _render(rng, cv, marking, realism)
    return Scene(cv.label, image, realism)
