"""Generated test frames for the probe tests (no binary fixtures: drawn with OpenCV each time)."""

from __future__ import annotations

import cv2
import numpy as np


def pattern(seed: int = 0, w: int = 1280, h: int = 720) -> np.ndarray:
    """A street-like test card: colour bars, a checkerboard, gradients, shapes, text and sensor noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    bars = [
        (192, 192, 192),
        (0, 192, 192),
        (192, 192, 0),
        (0, 192, 0),
        (192, 0, 192),
        (0, 0, 192),
        (192, 0, 0),
        (16, 16, 16),
    ]
    bw = w // len(bars)
    for i, colour in enumerate(bars):
        img[: h // 3, i * bw : (i + 1) * bw] = colour
    ramp = np.linspace(0, 255, w, dtype=np.uint8)
    img[h // 3 : h // 2] = ramp[None, :, None]
    sq = 40
    yy, xx = np.mgrid[h // 2 : h, 0:w]
    checker = (((yy // sq) + (xx // sq)) % 2 * 180 + 40).astype(np.uint8)
    img[h // 2 :] = checker[..., None]
    cv2.circle(img, (w // 3, 3 * h // 4), h // 6, (30, 120, 220), -1)
    cv2.rectangle(img, (2 * w // 3, h // 2 + 30), (2 * w // 3 + 200, h - 40), (200, 60, 40), -1)
    cv2.putText(
        img,
        "GBGATE 34020000001320000001",
        (40, h // 3 + 60),
        cv2.FONT_HERSHEY_SIMPLEX,
        1.6,
        (10, 10, 10),
        3,
        cv2.LINE_AA,
    )
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def black(w: int = 1280, h: int = 720) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.clip(rng.normal(8, 2, (h, w, 3)), 0, 255).astype(np.uint8)


def white(w: int = 1280, h: int = 720) -> np.ndarray:
    rng = np.random.default_rng(2)
    return np.clip(rng.normal(245, 2, (h, w, 3)), 0, 255).astype(np.uint8)


def blue_screen(w: int = 1280, h: int = 720) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (200, 40, 20)
    cv2.rectangle(img, (w // 3, h // 2 - 40), (2 * w // 3, h // 2 + 40), (0, 0, 0), -1)
    cv2.putText(
        img, "NO SIGNAL", (w // 3 + 40, h // 2 + 20), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3
    )
    return img


def grey_card(w: int = 1280, h: int = 720) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


def blurred(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), 9)


def covered(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    h, w = out.shape[:2]
    cv2.rectangle(out, (0, 0), (int(w * 0.65), int(h * 0.7)), (35, 35, 40), -1)
    return out


def colour_shifted(img: np.ndarray) -> np.ndarray:
    out = img.astype(np.int16)
    out[..., 0] -= 60  # less blue
    out[..., 2] += 70  # more red
    return np.clip(out, 0, 255).astype(np.uint8)
