"""Face augmentation as one Keras layer: a random flip, shift, rotation and zoom in a single
resampling, then brightness and contrast, for the whole batch at once.

Why not Keras' own random layers (RandomFlip, RandomTranslation, RandomRotation, RandomZoom,
RandomBrightness, RandomContrast)? On TensorFlow they cost nothing, but on the JAX and PyTorch
backends they cost about 330 ms per step of 128 faces on an H200 (a w32 edge-cnn step without
them takes 2.4 ms on JAX; docs/results.md, 2026-11-28), so a GPU trained no faster than
the workstation's two cores. This layer builds one affine map per face and samples every face
with a handful of batched ``keras.ops`` (gathers and arithmetic), so it compiles into the
training step on any backend. One bilinear resampling instead of three also blurs less.
"""

from __future__ import annotations

import math

from .common.keras_env import keras

ops = keras.ops


@keras.saving.register_keras_serializable(package="edge_fer")
class FaceAugment(keras.layers.Layer):
    """Random horizontal flip, shift (share of the side), rotation (degrees), zoom (share),
    brightness (added, share of the 0-1 range) and contrast (factor around each face's mean);
    then, with probability ``erasing``, one rectangle of uniform noise (random erasing, Zhong et
    al. 2017: 2-20% of the face, aspect 0.3-3.3), which makes a network use more of the face
    than its one most telling part.

    Active only in training; edges are filled with the nearest pixel, and the result is
    clipped to the 0-1 pixel range the trainer feeds.
    """

    def __init__(self, flip: bool = True, shift: float = 0.1, rotate: float = 14.4, zoom: float = 0.1,
                 brightness: float = 0.2, contrast: float = 0.3, erasing: float = 0.0, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.flip, self.shift, self.rotate, self.zoom = flip, shift, rotate, zoom
        self.brightness, self.contrast, self.erasing, self.seed = brightness, contrast, erasing, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training:
            return x
        batch, height, width = ops.shape(x)[0], x.shape[1], x.shape[2]

        def uniform(low, high):  # one draw per face
            return keras.random.uniform((batch,), low, high, seed=self.seed_generator)

        # Output pixel -> source pixel, about the centre: source = A @ (out - c) + c + t.
        theta = uniform(-1.0, 1.0) * (self.rotate * math.pi / 180)
        scale = uniform(1 - self.zoom, 1 + self.zoom)
        mirror = ops.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0) if self.flip else ops.ones((batch,))
        cos, sin = ops.cos(theta) * scale, ops.sin(theta) * scale
        tx, ty = uniform(-self.shift, self.shift) * width, uniform(-self.shift, self.shift) * height
        cy, cx = (height - 1) / 2, (width - 1) / 2
        rows, cols = ops.meshgrid(ops.arange(height, dtype="float32") - cy,
                                  ops.arange(width, dtype="float32") - cx, indexing="ij")
        u, v = ops.reshape(cols, (1, -1)), ops.reshape(rows, (1, -1))  # (1, H*W)
        src_x = (cos * mirror)[:, None] * u - sin[:, None] * v + (cx + tx)[:, None]
        src_y = (sin * mirror)[:, None] * u + cos[:, None] * v + (cy + ty)[:, None]
        out = self._bilinear(x, src_x, src_y)

        out = out + uniform(-self.brightness, self.brightness)[:, None, None, None]
        mean = ops.mean(out, axis=(1, 2), keepdims=True)
        out = (out - mean) * uniform(1 - self.contrast, 1 + self.contrast)[:, None, None, None] + mean
        out = ops.clip(out, 0.0, 1.0)
        if self.erasing:
            out = self._erase(out, uniform, rows + cy, cols + cx)
        return out

    def _erase(self, x, uniform, rows, cols):
        """One noise rectangle on each face with probability ``erasing`` (area and aspect drawn per face)."""
        height, width = x.shape[1], x.shape[2]
        area = uniform(0.02, 0.2) * (height * width)
        aspect = ops.exp(uniform(math.log(0.3), math.log(1 / 0.3)))
        h, w = ops.minimum(ops.sqrt(area * aspect), height), ops.minimum(ops.sqrt(area / aspect), width)
        top, left = uniform(0.0, 1.0) * (height - h), uniform(0.0, 1.0) * (width - w)
        on = ops.cast(uniform(0.0, 1.0) < self.erasing, "float32")
        inside = ((rows[None] >= top[:, None, None]) & (rows[None] < (top + h)[:, None, None])
                  & (cols[None] >= left[:, None, None]) & (cols[None] < (left + w)[:, None, None]))
        mask = ops.cast(inside, "float32")[..., None] * on[:, None, None, None]
        noise = keras.random.uniform(ops.shape(x), 0.0, 1.0, seed=self.seed_generator)
        return x * (1 - mask) + noise * mask

    @staticmethod
    def _bilinear(x, src_x, src_y):
        """``x`` sampled at (src_x, src_y), each (B, H*W), edges clamped ("nearest" fill)."""
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        src_x = ops.clip(src_x, 0.0, width - 1.0)
        src_y = ops.clip(src_y, 0.0, height - 1.0)
        x0, y0 = ops.floor(src_x), ops.floor(src_y)
        wx, wy = (src_x - x0)[..., None], (src_y - y0)[..., None]
        x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
        x1, y1 = ops.minimum(x0 + 1, width - 1), ops.minimum(y0 + 1, height - 1)
        flat = ops.reshape(x, (-1,))  # one plain gather per corner: take_along_axis is slow on TensorFlow
        base = ops.arange(ops.shape(x)[0], dtype="int32")[:, None] * (height * width)
        channel = ops.arange(channels, dtype="int32")

        def at(yy, xx):
            return ops.take(flat, ((base + yy * width + xx) * channels)[..., None] + channel)

        top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
        bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
        return ops.reshape(top * (1 - wy) + bottom * wy, (-1, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "shift": self.shift, "rotate": self.rotate,
                "zoom": self.zoom, "brightness": self.brightness, "contrast": self.contrast, "erasing": self.erasing,
                "seed": self.seed}
