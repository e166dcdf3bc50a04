"""Training's image readers: any file a data set holds -> RGB, the way a model must see it.

PIL decodes more formats than OpenCV (palette PNGs with transparency, CMYK JPEGs, WebP
without an extension); every image becomes 3-channel RGB so that a model cannot learn a
class from its file format.
"""
import cv2
import numpy as np
from PIL import Image


def read_rgb(path, hygiene=None):
    """Decode any image to an HxWx3 uint8 RGB array; alpha, gray, palette and CMYK converted.

    Transparent pixels are composited on white, so a PNG cut-out does not become a
    black-background tell that only one class has.
    """
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            if hygiene is not None:
                hygiene.note("converted_alpha_to_rgb", path)
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        elif mode in ("L", "I", "I;16", "F", "1") and hygiene is not None:
            hygiene.note("converted_gray_to_rgb", path)
        elif mode == "CMYK" and hygiene is not None:
            hygiene.note("converted_cmyk_to_rgb", path)
        return np.asarray(im.convert("RGB"))


def dhash(rgb):
    """64-bit difference hash: survives re-encoding, resizing and mild colour changes."""
    gray = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (gray[:, 1:] > gray[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])
