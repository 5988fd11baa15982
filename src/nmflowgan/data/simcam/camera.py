"""A virtual camera: unprocess an sRGB scene to raw, add shot and read noise, process back to 8-bit sRGB.

The pipeline follows Brooks et al. 2019 ("Unprocessing Images for Learned Raw Denoising", CVPR):

    sRGB -> inverse tone curve -> inverse gamma -> inverse colour matrix -> inverse white balance
         -> Bayer mosaic = clean raw in [0, 1]
    noisy raw = clip(raw + N(0, shot(ISO) * raw + read(ISO)), 0, 1)
    raw -> demosaic -> white balance -> colour matrix -> denoise / sharpen -> gamma -> tone curve -> 8 bit
         -> JPEG (cameras that compress)

Clean and noisy raw go through the same processing, so the sRGB noise is signal-dependent (shot noise,
then the gamma and tone curve), channel-correlated (colour matrix, chroma smoothing) and spatially
correlated (demosaicing, in-camera denoising and sharpening, JPEG's blocks and chroma subsampling), as a
phone's is. :func:`camera_population` draws any number of cameras across this parameter space.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nmflowgan.errors import BadInputError

BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
DEMOSAIC_METHODS = ("nearest", "bilinear", "chroma", "gradient")
# What a drawn camera may use: `nearest` gives each 2x2 phase a lag-1 correlation 0.3-1.1 apart, which no real
# camera shows (docs/realism.md, "The simulator against real grids"), so it stays a built-in camera's only.
POPULATION_DEMOSAIC = ("gradient", "bilinear", "chroma")
ISO_RANGE = (50.0, 12800.0)
_CHANNEL = {"R": 0, "G": 1, "B": 2}


@dataclass(frozen=True)
class VirtualCamera:
    """The parameters of one simulated camera.

    Attributes:
        code: two-character camera code (disjoint from SIDD's IP, GP, S6, N6, G4).
        bayer: colour filter array, top-left 2x2 block read row by row (``RGGB``, ...).
        wb_gains: red and blue white-balance gains (green is 1).
        rgb_from_cam: 3x3 colour matrix (rows sum to 1), camera RGB -> linear sRGB.
        shot_at_100: shot-noise variance per unit of raw signal at ISO 100; grows linearly with ISO.
        read_at_100: read-noise variance (raw units squared) at ISO 100; grows with ISO squared.
        read_floor: ISO-independent read-noise variance (the floor at low ISO).
        demosaic: ``nearest``, ``bilinear``, ``chroma`` (bilinear + smoothed colour differences) or ``gradient``
            (bilinear corrected by the other channels' Laplacian, Malvar, He and Cutler, ICASSP 2004).
        denoise_sigma_px, denoise_amount: in-camera denoising, a Gaussian blur blended in linear RGB;
            the blend grows with ISO (``amount * log2(ISO/100)/5``, clipped to [0, amount]).
        sharpen_amount: unsharp-mask strength (1-pixel Gaussian) after denoising.
        tone_strength: blend between no tone curve (0) and a smoothstep S-curve (1).
        jpeg_quality: the camera saves JPEG at this quality (4:2:0 chroma), or PNG when None.
        jpeg_requality: a JPEG camera's image saved a second time at this quality (an editor or a web upload
            re-compressing on the same 8x8 grid), or once only when None.
    """

    code: str
    bayer: str
    wb_gains: tuple[float, float]
    rgb_from_cam: tuple[tuple[float, float, float], ...]
    shot_at_100: float
    read_at_100: float
    read_floor: float
    demosaic: str
    denoise_sigma_px: float
    denoise_amount: float
    sharpen_amount: float
    tone_strength: float
    jpeg_quality: int | None = None
    jpeg_requality: int | None = None

    def __post_init__(self) -> None:
        if len(self.code) != 2:
            raise BadInputError(f"camera code {self.code!r} must have two characters")
        if self.bayer not in BAYER_PATTERNS:
            raise BadInputError(f"Bayer pattern {self.bayer!r} is not one of {BAYER_PATTERNS}")
        if self.demosaic not in DEMOSAIC_METHODS:
            raise BadInputError(f"demosaic method {self.demosaic!r} is not one of {DEMOSAIC_METHODS}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 95:
            raise BadInputError(f"JPEG quality {self.jpeg_quality} is outside 1-95")
        if self.jpeg_requality is not None and (self.jpeg_quality is None or not 1 <= self.jpeg_requality <= 95):
            raise BadInputError(f"a second JPEG quality ({self.jpeg_requality}) needs a first and must lie in 1-95")

    # ---- the noise level function -----------------------------------------------------------------

    def noise_variance(self, iso: float) -> tuple[float, float]:
        """``(shot, read)``: raw noise variance is ``shot * raw + read`` at this ISO (raw in [0, 1])."""
        low, high = ISO_RANGE
        if not low <= iso <= high:
            raise BadInputError(f"simcam ISO {iso:g} is outside {low:g}-{high:g}")
        gain = iso / 100.0
        return self.shot_at_100 * gain, self.read_at_100 * gain * gain + self.read_floor

    def denoise_blend(self, iso: float) -> float:
        return self.denoise_amount * min(1.0, max(0.0, math.log2(iso / 100.0) / 5.0))

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- the pipeline -----------------------------------------------------------------------------

    def unprocess(self, srgb: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 sRGB -> ``(B, 1, H, W)`` float Bayer raw in [0, 1] (H, W even)."""
        levels = torch.arange(256, dtype=torch.float32) / 255.0
        linear = srgb_to_linear(inverse_tone(levels, self.tone_strength))[srgb.long()]  # 256-entry table
        matrix = torch.tensor(self.rgb_from_cam, dtype=linear.dtype)
        cam = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(matrix), linear)  # (B, 3, H, W)
        cam = cam / self._gains(linear)
        return (cam.clamp(0, 1) * self._masks(linear)).sum(1, keepdim=True)

    def add_noise(self, raw: torch.Tensor, iso: float, generator: torch.Generator | None) -> torch.Tensor:
        """Heteroscedastic Gaussian shot + read noise on ``(B, 1, H, W)`` raw, clipped to [0, 1]."""
        shot, read = self.noise_variance(iso)
        std = torch.sqrt(shot * raw + read)
        gaussian = torch.randn(raw.shape, generator=generator, dtype=raw.dtype)
        return (raw + gaussian.to(raw.device) * std).clamp(0, 1)

    def process(self, raw: torch.Tensor, iso: float) -> torch.Tensor:
        """``(B, 1, H, W)`` raw -> ``(B, 3, H, W)`` uint8 sRGB through the camera's pipeline."""
        cam = self._demosaic(raw) * self._gains(raw)
        matrix = torch.tensor(self.rgb_from_cam, dtype=raw.dtype, device=raw.device)
        linear = torch.einsum("ij,bjhw->bihw", matrix, cam).clamp(0, 1)
        blend = self.denoise_blend(iso)
        if blend > 0:
            linear = (1 - blend) * linear + blend * gaussian_blur(linear, self.denoise_sigma_px)
        if self.sharpen_amount > 0:
            linear = linear + self.sharpen_amount * (linear - gaussian_blur(linear, 1.0))
        srgb = tone(linear_to_srgb(linear.clamp(0, 1)), self.tone_strength)
        return (srgb * 255.0).round().clamp(0, 255).to(torch.uint8)

    def capture(self, scene: np.ndarray, iso: float, draws: int = 1,
                generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Photographs an sRGB scene: the clean image and ``draws`` independent noisy images of it.

        Args:
            scene: ``uint8 (H, W, 3)`` sRGB (H and W are cropped to even numbers).
            iso: in 50-12800.
            draws: K, the number of independent noisy images (K >= 2 gives the oracle of evaluation).
            generator: the source of the raw noise (CPU).

        Returns:
            ``clean`` as ``uint8 (H, W, 3)`` and ``noisy`` as ``uint8 (K, H, W, 3)``.
        """
        return self.capture_raw(self.unprocess(scene_tensor(scene)), iso, draws, generator)

    def capture_raw(self, raw: torch.Tensor, iso: float, draws: int,
                    generator: torch.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`capture`, from the ``(1, 1, H, W)`` clean raw that :meth:`unprocess` made."""
        noisy = torch.cat([self.add_noise(raw, iso, generator) for _ in range(draws)])
        images = self.process(torch.cat([raw, noisy]), iso).permute(0, 2, 3, 1).numpy()
        if self.jpeg_quality is not None:
            images = np.stack([jpeg_round_trip(image, self.jpeg_quality) for image in images])
        if self.jpeg_requality is not None:
            images = np.stack([jpeg_round_trip(image, self.jpeg_requality) for image in images])
        return images[0], images[1:]

    # ---- helpers ----------------------------------------------------------------------------------

    def _gains(self, like: torch.Tensor) -> torch.Tensor:
        red, blue = self.wb_gains
        return torch.tensor([red, 1.0, blue], dtype=like.dtype, device=like.device)[None, :, None, None]

    def _masks(self, like: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H, W)`` one-hot colour-filter masks of this camera's Bayer pattern."""
        height, width = like.shape[-2:]
        block = torch.zeros(3, 2, 2, dtype=like.dtype, device=like.device)
        for position, colour in enumerate(self.bayer):
            block[_CHANNEL[colour], position // 2, position % 2] = 1
        return block.repeat(1, height // 2, width // 2)[None]

    def _demosaic(self, raw: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` raw -> ``(B, 3, H, W)`` camera RGB."""
        masks = self._masks(raw)
        if self.demosaic == "nearest":
            # Every 2x2 block takes its own R and B sample and the mean of its two G samples.
            planes = F.avg_pool2d(raw * masks, 2) / F.avg_pool2d(masks, 2)
            return F.interpolate(planes, scale_factor=2, mode="nearest")
        if self.demosaic == "gradient":
            return self._gradient_demosaic(raw)
        cross = torch.tensor([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=raw.dtype, device=raw.device)
        box = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=raw.dtype, device=raw.device)
        kernels = torch.stack([box, cross, box])[:, None]  # (3, 1, 3, 3)
        # Normalized convolution: each missing sample is the weighted mean of the samples around it.
        sampled = F.conv2d(F.pad(raw * masks, (1, 1, 1, 1), mode="reflect"), kernels, groups=3)
        weight = F.conv2d(F.pad(masks, (1, 1, 1, 1), mode="reflect"), kernels, groups=3)
        rgb = sampled / weight
        if self.demosaic == "chroma":
            green = rgb[:, 1:2]
            difference = F.avg_pool2d(F.pad(rgb - green, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
            rgb = green + difference
        return rgb

    def _gradient_demosaic(self, raw: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` raw -> ``(B, 3, H, W)``: each missing sample is the bilinear estimate plus a share of the
        Laplacian of the colour sampled there (the 5x5 filters of Malvar, He and Cutler, ICASSP 2004)."""
        g_at_rb = [[0, 0, -2, 0, 0], [0, 0, 4, 0, 0], [-2, 4, 8, 4, -2], [0, 0, 4, 0, 0], [0, 0, -2, 0, 0]]
        along_row = [[0, 0, 1, 0, 0], [0, -2, 0, -2, 0], [-2, 8, 10, 8, -2], [0, -2, 0, -2, 0], [0, 0, 1, 0, 0]]
        across = [[0, 0, -3, 0, 0], [0, 4, 0, 4, 0], [-3, 0, 12, 0, -3], [0, 4, 0, 4, 0], [0, 0, -3, 0, 0]]
        kernels = torch.tensor([g_at_rb, along_row, list(map(list, zip(*along_row))), across],
                               dtype=raw.dtype, device=raw.device)[:, None] / 16
        estimates = torch.cat([raw, F.conv2d(F.pad(raw, (2, 2, 2, 2), mode="reflect"), kernels)], 1)  # (B, 5, H, W)
        # Which estimate gives channel c at 2x2 position p: 0 the sample itself, 1 green at red/blue, 2 red/blue
        # at green from the row's neighbours, 3 from the column's, 4 red at blue or blue at red.
        choice = torch.zeros(3, 2, 2, dtype=torch.long)
        for position, colour in enumerate(self.bayer):
            row, column = divmod(position, 2)
            for channel in "RGB":
                if channel == colour:
                    continue
                if channel == "G":
                    source = 1
                elif colour == "G":
                    source = 2 if self.bayer[row * 2 + 1 - column] == channel else 3
                else:
                    source = 4
                choice[_CHANNEL[channel], row, column] = source
        height, width = raw.shape[-2:]
        index = choice.repeat(1, height // 2, width // 2).to(raw.device)  # (3, H, W)
        return estimates.gather(1, index[None].expand(raw.shape[0], -1, -1, -1))


def scene_tensor(scene: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> ``uint8 (1, 3, H', W')`` with H', W' cropped to even sizes (whole Bayer blocks)."""
    if scene.dtype != np.uint8 or scene.ndim != 3 or scene.shape[2] != 3:
        raise BadInputError(f"a scene must be uint8 (H, W, 3), got {scene.dtype}{scene.shape}")
    height, width = scene.shape[0] // 2 * 2, scene.shape[1] // 2 * 2
    if height < 2 or width < 2:
        raise BadInputError(f"a scene must be at least 2x2 pixels, got {scene.shape[:2]}")
    return torch.from_numpy(np.ascontiguousarray(scene[:height, :width])).permute(2, 0, 1)[None]


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with reflect padding (radius ``ceil(3 sigma)``).

    Written as weighted sums of shifted slices: for these few taps it is several times faster on CPU
    than a depthwise convolution.
    """
    radius = max(1, math.ceil(3 * sigma_px))
    taps = [math.exp(-0.5 * (t / sigma_px) ** 2) for t in range(-radius, radius + 1)]
    total = sum(taps)
    height, width = images.shape[-2:]
    padded = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    rows = sum(w / total * padded[..., :, i : i + width] for i, w in enumerate(taps))
    padded = F.pad(rows, (0, 0, radius, radius), mode="reflect")
    return sum(w / total * padded[..., i : i + height, :] for i, w in enumerate(taps))


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """``uint8 (H, W, 3)`` saved as a baseline JPEG (4:2:0) at ``quality`` and read back."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=2)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def srgb_to_linear(srgb: torch.Tensor) -> torch.Tensor:
    return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb.clamp_min(0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def tone(x: torch.Tensor, strength: float) -> torch.Tensor:
    """``(1 - s) x + s (3x^2 - 2x^3)``: a global S-curve, monotone on [0, 1] for s in [0, 1]."""
    return (1 - strength) * x + strength * (3 * x**2 - 2 * x**3)


def inverse_tone(y: torch.Tensor, strength: float, iterations: int = 30) -> torch.Tensor:
    """Inverts :func:`tone` on [0, 1] by bisection (exact to 2^-30)."""
    low, high = torch.zeros_like(y), torch.ones_like(y)
    for _ in range(iterations):
        middle = (low + high) / 2
        above = tone(middle, strength) > y
        high = torch.where(above, middle, high)
        low = torch.where(above, low, middle)
    return (low + high) / 2


def builtin_cameras() -> tuple[VirtualCamera, ...]:
    """The five built-in cameras: different CFAs, colour, noise levels and in-camera processing."""
    return (
        VirtualCamera("V1", "RGGB", (2.0, 1.7), ((1.62, -0.47, -0.15), (-0.21, 1.47, -0.26), (0.04, -0.52, 1.48)),
                      shot_at_100=3.0e-4, read_at_100=2.0e-7, read_floor=2.0e-6, demosaic="bilinear",
                      denoise_sigma_px=1.0, denoise_amount=0.3, sharpen_amount=0.0, tone_strength=0.3),
        VirtualCamera("V2", "BGGR", (2.3, 1.5), ((1.75, -0.60, -0.15), (-0.28, 1.62, -0.34), (0.02, -0.68, 1.66)),
                      shot_at_100=5.0e-4, read_at_100=4.0e-7, read_floor=4.0e-6, demosaic="chroma",
                      denoise_sigma_px=1.2, denoise_amount=0.5, sharpen_amount=0.3, tone_strength=0.5),
        VirtualCamera("V3", "GRBG", (1.9, 1.9), ((1.45, -0.35, -0.10), (-0.18, 1.36, -0.18), (0.05, -0.40, 1.35)),
                      shot_at_100=2.0e-4, read_at_100=1.0e-7, read_floor=1.0e-6, demosaic="nearest",
                      denoise_sigma_px=0.8, denoise_amount=0.0, sharpen_amount=0.0, tone_strength=0.1),
        VirtualCamera("V4", "GBRG", (2.1, 1.6), ((1.55, -0.40, -0.15), (-0.25, 1.50, -0.25), (0.00, -0.45, 1.45)),
                      shot_at_100=7.0e-4, read_at_100=6.0e-7, read_floor=3.0e-6, demosaic="bilinear",
                      denoise_sigma_px=1.5, denoise_amount=0.6, sharpen_amount=0.6, tone_strength=0.4),
        VirtualCamera("V5", "RGGB", (2.4, 1.8), ((1.90, -0.70, -0.20), (-0.30, 1.70, -0.40), (0.05, -0.75, 1.70)),
                      shot_at_100=4.0e-4, read_at_100=3.0e-7, read_floor=1.5e-6, demosaic="chroma",
                      denoise_sigma_px=1.0, denoise_amount=0.2, sharpen_amount=0.2, tone_strength=0.6),
    )


# Codes of drawn cameras: a letter outside SIDD's and the built-ins' first letters, then a digit or letter.
POPULATION_LETTERS = "ABCDEFHJKLMOQRTUWXYZ"
POPULATION_SYMBOLS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def population_code(index: int) -> str:
    """The two-character code of the ``index``-th drawn camera: ``A0, A1, ..., A9, AA, ...``."""
    letter, symbol = divmod(index, len(POPULATION_SYMBOLS))
    if letter >= len(POPULATION_LETTERS):
        raise BadInputError(f"a camera population holds at most {len(POPULATION_LETTERS) * len(POPULATION_SYMBOLS)} "
                            f"cameras, asked for camera {index + 1}")
    return POPULATION_LETTERS[letter] + POPULATION_SYMBOLS[symbol]


def random_camera(code: str, rng: np.random.Generator) -> VirtualCamera:
    """One camera drawn across the simulator's parameter space.

    Ranges (uniform unless said): shot noise 1e-5-8e-4 and read noise 2e-8-8e-7 per unit at ISO 100 and a
    read floor of 1e-7-6e-6 (all log-uniform: phones to large-sensor cameras); any Bayer pattern; the
    ``gradient``, ``bilinear`` or ``chroma`` demosaic (:data:`POPULATION_DEMOSAIC`); red and blue gains 1.5-2.6
    and 1.3-2.1; a colour matrix with diagonal 1.3-2.0 (rows sum to 1); in-camera denoising of 0.6-1.6 px
    blended up to 0-0.8; sharpening 0-0.7 in half of the cameras; tone strength 0-0.7; JPEG at quality 60-95 in
    two cameras of three, PNG otherwise; half of the JPEG cameras saved a second time at quality 70-95.
    """

    def log_uniform(low: float, high: float) -> float:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))

    matrix = []
    for channel in range(3):
        diagonal = rng.uniform(1.3, 2.0)
        share = rng.uniform(0.1, 0.9)  # how the excess splits between the other two channels
        row = [0.0, 0.0, 0.0]
        others = [c for c in range(3) if c != channel]
        row[channel] = diagonal
        row[others[0]], row[others[1]] = -(diagonal - 1) * share, -(diagonal - 1) * (1 - share)
        matrix.append(tuple(round(v, 4) for v in row))
    return VirtualCamera(
        code=code, bayer=str(rng.choice(BAYER_PATTERNS)),
        wb_gains=(round(rng.uniform(1.5, 2.6), 3), round(rng.uniform(1.3, 2.1), 3)),
        rgb_from_cam=tuple(matrix),
        shot_at_100=log_uniform(1e-5, 8e-4), read_at_100=log_uniform(2e-8, 8e-7), read_floor=log_uniform(1e-7, 6e-6),
        demosaic=str(rng.choice(POPULATION_DEMOSAIC)),
        denoise_sigma_px=round(rng.uniform(0.6, 1.6), 3), denoise_amount=round(rng.uniform(0.0, 0.8), 3),
        sharpen_amount=round(rng.uniform(0.0, 0.7), 3) if rng.uniform() < 0.5 else 0.0,
        tone_strength=round(rng.uniform(0.0, 0.7), 3),
        jpeg_quality=(quality := int(rng.integers(60, 96)) if rng.uniform() < 2 / 3 else None),
        # drawn last, so that every other parameter of camera i is what earlier populations drew
        jpeg_requality=int(rng.integers(70, 96)) if quality is not None and rng.uniform() < 0.5 else None,
    )


def camera_population(count: int, seed: int) -> tuple[VirtualCamera, ...]:
    """``count`` cameras drawn by :func:`random_camera`, coded ``A0, A1, ...``; a pure function of its arguments
    (camera ``i`` is the same whatever ``count``)."""
    return tuple(random_camera(population_code(i), np.random.default_rng([seed, i])) for i in range(count))
