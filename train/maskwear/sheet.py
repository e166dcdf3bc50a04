"""Contact sheets to look at: the faces with their three worn versions, and the textures."""
import cv2
import numpy as np

TILE = 112
HEADER = 18
COLUMNS = ("target", "mask", "incorrect_nose", "incorrect_chin")


def tile(rgb, size=TILE):
    """``rgb`` letterboxed on dark grey into a ``size`` square (faces keep their shape)."""
    h, w = rgb.shape[:2]
    scale = float(size) / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.full((size, size, 3), 40, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = small
    return out


def _label(image, text, x, y, scale=0.38, colour=(255, 255, 255)):
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def contact_sheet(rows, groups=2):
    """One RGB image: ``rows`` of (caption, [target, mask, incorrect_nose, incorrect_chin]
    crops), ``groups`` rows side by side, each crop shown at its aspect on a dark tile."""
    per = -(-len(rows) // groups)
    width = groups * (len(COLUMNS) * TILE + 8)
    sheet = np.full((HEADER + per * (TILE + 14), width, 3), 20, np.uint8)
    for g in range(groups):
        x0 = g * (len(COLUMNS) * TILE + 8)
        for c, name in enumerate(COLUMNS):
            _label(sheet, name, x0 + c * TILE + 4, 13)
        for r, (caption, crops) in enumerate(rows[g * per:(g + 1) * per]):
            y0 = HEADER + r * (TILE + 14)
            _label(sheet, caption[:44], x0 + 2, y0 + 10, 0.32, (200, 200, 120))
            for c, crop in enumerate(crops):
                sheet[y0 + 13:y0 + 13 + TILE, x0 + c * TILE:x0 + (c + 1) * TILE] = tile(crop)
    return sheet


def texture_sheet(textures, columns=10, width=120):
    """The textures on white, ``columns`` across, each captioned with its source."""
    if not textures:
        return np.full((40, 200, 3), 255, np.uint8)
    h = int(round(textures[0].rgba.shape[0] * width / float(textures[0].rgba.shape[1])))
    rows = -(-len(textures) // columns)
    sheet = np.full((rows * (h + 12), columns * width, 3), 255, np.uint8)
    for i, t in enumerate(textures):
        rgba = cv2.resize(t.rgba, (width, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = rgba[:, :, 3:] / 255.0
        y, x = (i // columns) * (h + 12), (i % columns) * width
        sheet[y + 12:y + 12 + h, x:x + width] = np.round(rgba[:, :, :3] * alpha + 255 * (1 - alpha))
        _label(sheet, t.id[-22:], x + 2, y + 9, 0.3, (0, 0, 0))
    return sheet


def save(path, rgb):
    """Write an RGB image (PNG or JPEG by extension); raise if OpenCV cannot."""
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError("cannot write %s" % path)
