"""Training augmentation aimed at what the detector misses: tiny, blurred and occluded faces.

One scene -> one square crop of ``size`` px (640 by default) with its face boxes and ignore
regions moved consistently:

- scale: the crop is drawn at ``r`` times the scale the edge runs at (the frame's long side
  resized to ``infer_size``), ``r`` log-uniform in ``scale_range``; r < 1 makes faces smaller
  than the edge will see them (the crop is then larger than the image and padded with the
  mean colour, which is 0 after normalisation), r > 1 larger. Resizing is the edge's
  (area when shrinking, linear when enlarging). Most crops are centred near a face;
- large faces (``p_large``, off by default): a crop zoomed onto one face of 32 px or more so
  that it is 128 to ``LARGE_FRACTION`` x ``size`` px across (log-uniform), as a face in the
  foreground of a portrait or an entrance camera is: the scene sets' faces are small, so the
  largest anchors (256 and 512 px) otherwise see almost only background;
- boxes whose centre leaves the crop, or whose longest side falls under ``min_face`` px,
  become ignore regions (neither face nor background);
- horizontal flip; photometric jitter (brightness, contrast, saturation, hue);
- blur: defocus (disk), motion (a line at a random angle) or Gaussian;
- occluders over part of a face (a solid rectangle in a mask-like or random colour, or a
  patch of the same image) from one side, covering 20-50 % of the box.
"""
import math
import random

import cv2
import numpy as np

from edge.infer.detectors.retinaface import MEAN_BGR, to_blob

MASK_COLOURS = ((230, 200, 160), (245, 245, 245), (30, 30, 30), (200, 170, 120))  # BGR
LARGE_FACE_MIN, LARGE_FRACTION = 128.0, 0.875  # a zoomed face's longest side: px, of the crop
LARGE_SOURCE_MIN = 32.0  # faces smaller than this in the scene are not zoomed (a blur, no face)



def preprocess(image_bgr):
    """BGR uint8 HxWx3 -> float32 1x3xHxW minus the mean, exactly as the edge runtime does it."""
    return to_blob(image_bgr)

class TrainAugment(object):
    """Callable ``(image_bgr, boxes, ignore, rng) -> (image uint8 SxSx3, boxes, ignore)``."""

    def __init__(self, size=640, infer_size=960, scale_range=(0.5, 2.0), min_face=8.0,
                 p_face_centred=0.8, p_blur=0.3, p_occlude=0.3, p_photometric=0.8, p_large=0.0):
        self.size = int(size)
        self.infer_size = float(infer_size)
        self.scale_range = tuple(float(v) for v in scale_range)
        self.min_face = float(min_face)
        self.p_face_centred = p_face_centred
        self.p_blur = p_blur
        self.p_occlude = p_occlude
        self.p_photometric = p_photometric
        self.p_large = float(p_large)

    def __call__(self, image, boxes, ignore, rng=random):
        large = [b for b in boxes if max(b[2] - b[0], b[3] - b[1]) >= LARGE_SOURCE_MIN]
        # No draw at all when off, so that the default recipe's crops stay as they were.
        if self.p_large and large and rng.random() < self.p_large:
            image, boxes, ignore = self.crop_large(image, boxes, ignore, large[rng.randrange(len(large))], rng)
        else:
            image, boxes, ignore = self.crop(image, boxes, ignore, rng)
        if rng.random() < 0.5:
            image = np.ascontiguousarray(image[:, ::-1])
            boxes = flip_boxes(boxes, self.size)
            ignore = flip_boxes(ignore, self.size)
        if rng.random() < self.p_photometric:
            image = photometric(image, rng)
        for box in boxes:
            if rng.random() < self.p_occlude and max(box[2] - box[0], box[3] - box[1]) >= 12:
                occlude(image, box, rng)
        if rng.random() < self.p_blur:
            image = blur(image, rng)
        return image, boxes, ignore

    def crop(self, image, boxes, ignore, rng):
        """The square crop at a jittered scale; boxes kept, ignored or dropped as above."""
        h, w = image.shape[:2]
        lo, hi = self.scale_range
        scale = self.infer_size / max(h, w) * math.exp(rng.uniform(math.log(lo), math.log(hi)))
        side = self.size / scale  # crop side in image pixels
        if len(boxes) and rng.random() < self.p_face_centred:
            b = boxes[rng.randrange(len(boxes))]
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            x0 = rng.uniform(max(cx - side, min(0, w - side)), min(cx, max(0, w - side)))
            y0 = rng.uniform(max(cy - side, min(0, h - side)), min(cy, max(0, h - side)))
        else:
            x0 = rng.uniform(min(0, w - side), max(0, w - side))
            y0 = rng.uniform(min(0, h - side), max(0, h - side))
        # Resize the whole image (the edge's interpolation), then cut the crop at whole pixels.
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        factor = np.array([nw / float(w), nh / float(h)] * 2, np.float32)
        cx0, cy0 = int(round(x0 * factor[0])), int(round(y0 * factor[1]))
        out, region = padded_window(resized, cx0, cy0, self.size)
        shift = np.array([cx0, cy0, cx0, cy0], np.float32)
        moved = np.asarray(boxes, np.float32).reshape(-1, 4) * factor - shift
        moved_ignore = np.asarray(ignore, np.float32).reshape(-1, 4) * factor - shift
        return (out,) + self.keep(moved, moved_ignore, region)

    def crop_large(self, image, boxes, ignore, face, rng):
        """The square crop zoomed so that `face` is 128 to LARGE_FRACTION x size px across.

        The window is cut from the scene before it is resized (a 10x zoom of the whole scene
        would take gigabytes); beyond the scene it is padded with the mean colour."""
        target = math.exp(rng.uniform(math.log(LARGE_FACE_MIN), math.log(LARGE_FRACTION * self.size)))
        scale = target / max(face[2] - face[0], face[3] - face[1])
        side = self.size / scale  # crop side in scene pixels, at least the face's
        cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
        slack = side - (face[2] - face[0]) * 1.0, side - (face[3] - face[1]) * 1.0
        x0 = cx - side / 2 + rng.uniform(-0.5, 0.5) * max(0.0, slack[0])  # the face stays inside
        y0 = cy - side / 2 + rng.uniform(-0.5, 0.5) * max(0.0, slack[1])
        ix0, iy0 = int(math.floor(x0)), int(math.floor(y0))
        n = int(math.ceil(side)) + 1
        window, inside = padded_window(image, ix0, iy0, n)
        factor = self.size / float(n)
        out = cv2.resize(window, (self.size, self.size),
                         interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        shift = np.array([ix0, iy0, ix0, iy0], np.float32)
        moved = (np.asarray(boxes, np.float32).reshape(-1, 4) - shift) * factor
        moved_ignore = (np.asarray(ignore, np.float32).reshape(-1, 4) - shift) * factor
        region = tuple(v * factor for v in inside)
        return (out,) + self.keep(moved, moved_ignore, region)

    def keep(self, boxes, ignore, region):
        """Split moved boxes into faces and ignore regions; drop what is outside the crop."""
        x0, y0, x1, y1 = region
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (centre[:, 0] >= x0) & (centre[:, 0] < x1) & (centre[:, 1] >= y0) & (centre[:, 1] < y1)
        clipped = clip_boxes(boxes, x0, y0, x1, y1)
        visible = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        big = np.maximum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]) >= self.min_face
        faces = clipped[inside & visible & big]
        extra = clipped[visible & ~(inside & big)]
        ign = clip_boxes(ignore, x0, y0, x1, y1)
        ign = ign[(ign[:, 2] > ign[:, 0]) & (ign[:, 3] > ign[:, 1])]
        return faces, np.concatenate([ign, extra], axis=0)


def padded_window(image, x0, y0, side):
    """The ``side`` x ``side`` window of ``image`` whose top-left corner is (x0, y0) (whole
    pixels, possibly outside the image), padded with the mean colour where the image ends;
    and where the image lies in it, (x0, y0, x1, y1) in window pixels."""
    h, w = image.shape[:2]
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.array(MEAN_BGR).round().astype(np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out, (sx0 - x0, sy0 - y0, sx1 - x0, sy1 - y0)


def clip_boxes(boxes, x0, y0, x1, y1):
    """Boxes clipped to a region."""
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    np.clip(out[:, 0::2], x0, x1, out=out[:, 0::2])
    np.clip(out[:, 1::2], y0, y1, out=out[:, 1::2])
    return out


def flip_boxes(boxes, width):
    """Boxes mirrored left-right in an image ``width`` px wide."""
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = width - out[:, [2, 0]]
    return out


def photometric(image, rng):
    """Brightness, contrast, saturation and hue jitter (biubug6's ``_distort`` ranges)."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img += rng.uniform(-32, 32)
    if rng.random() < 0.5:
        img *= rng.uniform(0.5, 1.5)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
        if rng.random() < 0.5:
            hsv[:, :, 1] = np.clip(hsv[:, :, 1] * rng.uniform(0.5, 1.5), 0, 255)
        if rng.random() < 0.5:
            hsv[:, :, 0] = (hsv[:, :, 0] + rng.randint(-18, 18)) % 180
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    return img


def blur(image, rng):
    """Defocus, motion or Gaussian blur of the whole crop."""
    kind = rng.choice(("defocus", "motion", "gaussian"))
    if kind == "defocus":
        r = rng.randint(1, 3)
        kernel = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
        cv2.circle(kernel, (r, r), r, 1.0, -1)
    elif kind == "motion":
        length = rng.randint(3, 9)
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D(((length - 1) / 2.0, (length - 1) / 2.0), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
    else:
        return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    return cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))


def occlude(image, box, rng):
    """Cover 20-50 % of a face box from one side, in place: a mask-like or random colour,
    or a patch of the same image (another texture: a hand, a scarf, a head in front)."""
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    h, w = image.shape[:2]
    bw, bh = x1 - x0, y1 - y0
    share = rng.uniform(0.2, 0.5)
    side = rng.choice(("bottom", "bottom", "left", "right", "top"))  # chin/mouth most often
    if side == "bottom":
        y0 = y1 - max(1, int(bh * share))
    elif side == "top":
        y1 = y0 + max(1, int(bh * share))
    elif side == "left":
        x1 = x0 + max(1, int(bw * share))
    else:
        x0 = x1 - max(1, int(bw * share))
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    pick = rng.random()
    if pick < 0.4:
        image[y0:y1, x0:x1] = rng.choice(MASK_COLOURS)
    elif pick < 0.6:
        image[y0:y1, x0:x1] = [rng.randint(0, 255) for _ in range(3)]
    else:
        ph, pw = y1 - y0, x1 - x0
        sy, sx = rng.randint(0, max(0, h - ph)), rng.randint(0, max(0, w - pw))
        image[y0:y1, x0:x1] = image[sy:sy + ph, sx:sx + pw].copy()
