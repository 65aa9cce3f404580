"""The fictional brands and models the generator draws: each with its own house style.

Every brand here is invented. A brand fixes its typography, hardware and date-code format; a
model fixes its material, colours, lining and silhouette. Counterfeits deviate from these.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[float, float, float]

FINISHES: dict[str, RGB] = {
    "gold": (0.84, 0.67, 0.31),
    "silver": (0.80, 0.81, 0.82),
    "gunmetal": (0.38, 0.39, 0.42),
    "rose_gold": (0.82, 0.56, 0.49),
}


@dataclass(frozen=True)
class BrandStyle:
    slug: str
    name: str  # the word mark
    initials: str  # monogram letters
    logo_font: str
    logo_tracking: float
    lookalike_fonts: tuple[str, ...]  # what counterfeiters use, most convincing first (all visibly off)
    date_format: str  # L = letter, D = digit, anything else literal
    date_letters: str  # letters the brand's factories use
    date_font: str
    date_tracking: float
    finish: str
    hardware_shape: str  # round | rect | oval | rounded
    stitch_pitch: float  # stitch spacing as a fraction of the detail view width
    stitch_angle: float  # slant of each stitch from the seam direction, degrees
    stitch_length: float  # fraction of the pitch


@dataclass(frozen=True)
class ModelDesign:
    brand: BrandStyle
    slug: str
    name: str
    material: str  # leather | canvas
    body: RGB
    grain: float  # pebble cell size as a fraction of the view width
    thread: RGB
    foil: RGB  # logo colour (foil or print)
    logo_style: str  # foil | emboss | print
    lining_pattern: str  # stripes | dots | diamonds | monogram
    lining_colors: tuple[RGB, RGB]
    silhouette: str  # tote | satchel | flap | bucket
    aspect: float  # body width / height
    handle: float  # handle height as a fraction of body height

    @property
    def key(self) -> tuple[str, str]:
        return self.brand.slug, self.slug


AURELLE = BrandStyle(
    slug="aurelle", name="AURELLE", initials="AE", logo_font="STIXGeneral.ttf", logo_tracking=0.28,
    lookalike_fonts=("DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf"),
    date_format="LLDDDD", date_letters="ARSFTV", date_font="DejaVuSansMono.ttf", date_tracking=0.05,
    finish="gold", hardware_shape="round", stitch_pitch=0.055, stitch_angle=28.0, stitch_length=0.72,
)
VANTERRE = BrandStyle(
    slug="vanterre", name="VANTERRE", initials="VT", logo_font="DejaVuSans-Bold.ttf", logo_tracking=0.04,
    lookalike_fonts=("DejaVuSerif.ttf", "cmr10.ttf", "DejaVuSansMono.ttf"),
    date_format="DDDDLL", date_letters="BCDKMP", date_font="cmtt10.ttf", date_tracking=0.12,
    finish="silver", hardware_shape="rect", stitch_pitch=0.045, stitch_angle=0.0, stitch_length=0.65,
)
KESSLAND = BrandStyle(
    slug="kessland", name="KESSLAND", initials="KL", logo_font="cmss10.ttf", logo_tracking=0.16,
    lookalike_fonts=("STIXGeneral.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf"),
    date_format="LDDDDD", date_letters="EGHNRW", date_font="DejaVuSans.ttf", date_tracking=0.02,
    finish="gunmetal", hardware_shape="oval", stitch_pitch=0.065, stitch_angle=18.0, stitch_length=0.8,
)
ORMOND = BrandStyle(
    slug="ormond", name="ORMOND", initials="OD", logo_font="DejaVuSerif-Bold.ttf", logo_tracking=0.12,
    lookalike_fonts=("DejaVuSans.ttf", "STIXGeneral.ttf", "DejaVuSansMono.ttf"),
    date_format="DD-LL-DD", date_letters="CLMPSZ", date_font="DejaVuSerif.ttf", date_tracking=0.04,
    finish="rose_gold", hardware_shape="rounded", stitch_pitch=0.05, stitch_angle=35.0, stitch_length=0.6,
)

BRANDS: tuple[BrandStyle, ...] = (AURELLE, VANTERRE, KESSLAND, ORMOND)

MODELS: tuple[ModelDesign, ...] = (
    ModelDesign(AURELLE, "celeste", "Céleste Tote", "leather", (0.74, 0.52, 0.31), 0.022, (0.93, 0.88, 0.76),
                (0.85, 0.68, 0.32), "foil", "stripes", ((0.86, 0.80, 0.68), (0.52, 0.34, 0.22)), "tote", 1.25, 0.55),
    ModelDesign(AURELLE, "margaux", "Margaux Satchel", "canvas", (0.42, 0.28, 0.18), 0.03, (0.80, 0.62, 0.36),
                (0.87, 0.72, 0.42), "print", "monogram", ((0.62, 0.12, 0.14), (0.40, 0.06, 0.08)), "satchel", 1.45, 0.35),
    ModelDesign(VANTERRE, "lyra", "Lyra Flap", "leather", (0.13, 0.12, 0.12), 0.018, (0.36, 0.35, 0.34),
                (0.78, 0.79, 0.80), "foil", "dots", ((0.25, 0.25, 0.27), (0.62, 0.62, 0.64)), "flap", 1.6, 0.0),
    ModelDesign(VANTERRE, "sienna", "Sienna Bucket", "leather", (0.47, 0.11, 0.15), 0.026, (0.55, 0.16, 0.19),
                (0.30, 0.06, 0.08), "emboss", "diamonds", ((0.62, 0.30, 0.36), (0.42, 0.10, 0.15)), "bucket", 0.85, 0.6),
    ModelDesign(KESSLAND, "arden", "Arden Tote", "canvas", (0.15, 0.20, 0.35), 0.03, (0.90, 0.90, 0.88),
                (0.92, 0.92, 0.90), "print", "stripes", ((0.92, 0.92, 0.90), (0.16, 0.22, 0.40)), "tote", 1.1, 0.7),
    ModelDesign(KESSLAND, "brisa", "Brisa Satchel", "leather", (0.37, 0.40, 0.22), 0.02, (0.82, 0.78, 0.62),
                (0.42, 0.43, 0.45), "emboss", "dots", ((0.80, 0.76, 0.60), (0.36, 0.40, 0.22)), "satchel", 1.3, 0.4),
    ModelDesign(ORMOND, "regent", "Regent Doctor Bag", "leather", (0.56, 0.30, 0.15), 0.024, (0.95, 0.90, 0.80),
                (0.84, 0.60, 0.52), "foil", "diamonds", ((0.92, 0.86, 0.74), (0.56, 0.32, 0.18)), "satchel", 1.2, 0.5),
    ModelDesign(ORMOND, "vesper", "Vesper Flap", "canvas", (0.88, 0.83, 0.71), 0.03, (0.55, 0.36, 0.22),
                (0.55, 0.34, 0.22), "print", "monogram", ((0.93, 0.89, 0.80), (0.78, 0.62, 0.35)), "flap", 1.5, 0.0),
)


def find_model(brand: str, model: str) -> ModelDesign | None:
    for design in MODELS:
        if design.key == (brand, model):
            return design
    return None
