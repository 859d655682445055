"""Label-free augmented views of each adaptation image, for the ``view_vote`` estimator (Co-rewarding I on images).

Every image of a prompt is shown in ``views`` random variants: a random resized crop (area fraction in
``[crop_min, 1]``, aspect ratio in [3/4, 4/3], resized back to the original size), a rotation by up to
``max_rotation`` degrees (the corners filled with the image's border colour), and colour jitter (brightness,
contrast and saturation each scaled by a factor in ``[1 - jitter, 1 + jitter]``); a horizontal flip only with
``flip`` (it changes what a digit or a text shows). The prompt text is unchanged. Each view is seeded by
``(seed, step, uid, view)`` and never reads a label. Done with PIL on the driver; the views travel to the
workers as PNG bytes (never as pixel tensors), in the same prompt columns as the originals, under the uid
``<uid>#view<k>``.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageEnhance

from verl.data.images import load_image
from verl.protocol import DataProto

VIEW_SEP = "#view"


def augment(image: Image.Image, rng: np.random.Generator, *, crop_min: float = 0.7, max_rotation: float = 10.0,
            jitter: float = 0.2, flip: bool = False) -> Image.Image:
    """One random label-free view of ``image`` (module docstring), the same size as the input."""
    img = image.convert("RGB")
    w, h = img.size
    if crop_min < 1.0:
        area = rng.uniform(crop_min, 1.0) * w * h
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw = int(round(min(w, max(1.0, np.sqrt(area * ratio)))))
        ch = int(round(min(h, max(1.0, np.sqrt(area / ratio)))))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
    if max_rotation > 0:
        border = img.getpixel((0, 0))
        img = img.rotate(float(rng.uniform(-max_rotation, max_rotation)), resample=Image.BILINEAR, fillcolor=border)
    if jitter > 0:
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(float(rng.uniform(1 - jitter, 1 + jitter)))
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def view_seed(seed: int, step: int, uid: str, view: int) -> int:
    """A stable seed for one view (independent of Python's hash randomisation)."""
    digest = hashlib.sha256(f"{seed}|{step}|{uid}|{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def view_prompts(prompts: DataProto, step: int, *, views: int, seed: int, crop_min: float, max_rotation: float,
                 jitter: float, flip: bool) -> DataProto:
    """``views`` augmented copies of every prompt row (images as PNG bytes, uid ``<uid>#view<k>``)."""
    nt = prompts.non_tensor_batch
    rows: dict[str, list] = {k: [] for k in nt}
    for i in range(len(prompts)):
        uid = str(nt["uid"][i])
        originals = [load_image(ref) for ref in nt["images"][i]]
        for k in range(views):
            rng = np.random.default_rng(view_seed(seed, step, uid, k))
            for key in nt:
                rows[key].append(nt[key][i])
            rows["uid"][-1] = f"{uid}{VIEW_SEP}{k}"
            rows["images"][-1] = [png_bytes(augment(im, rng, crop_min=crop_min, max_rotation=max_rotation,
                                                    jitter=jitter, flip=flip)) for im in originals]
    return DataProto.from_dict(non_tensors=rows, meta_info=dict(prompts.meta_info))


def original_uid(uid: str) -> str:
    """``<uid>#view<k>`` -> ``<uid>``."""
    return str(uid).split(VIEW_SEP, 1)[0]
