"""Fonts: discovery of what is installed, traits measured from the files, pairing, and previews.

Discovery looks in three places, in this order, and works when any of them is missing:
PyPI font packages (distributions named ``font-*``), matplotlib's bundled DejaVu fonts, and system
fonts listed by fontconfig's ``fc-list`` (CJK fonts such as Noto CJK when installed). Each family
contributes its regular and bold upright faces.

Traits are measured with fontTools and PIL: x-height and cap height (OS/2, else the glyph
bounds), average lowercase width, stroke contrast (thickest/thinnest stroke of a rendered "o"),
serifs (PANOSE serif style, else the foot of a rendered "l" against its stem), weight, fixed pitch
and CJK coverage. Measurements are cached on disk (``$KILN_HOME/cache/packaging/fonts-v1.json``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import metadata, resources, util
from pathlib import Path
from typing import Any

import numpy as np

from kiln.errors import KilnError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
_CJK_SAMPLE = 0x4E2D  # 中


@dataclass(frozen=True)
class FontFace:
    path: str
    index: int
    family: str
    style: str
    weight: int
    source: str
    licence: str
    classes: tuple[str, ...]
    x_height: float  # fraction of the em
    cap_height: float
    width: float  # average lowercase advance, fraction of the em
    contrast: float  # thickest / thinnest stroke of "o"
    serif: bool
    monospace: bool
    cjk: bool

    @property
    def id(self) -> str:
        return f"{self.family} {self.style}".strip()

    def summary(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "style": self.style,
            "weight": self.weight,
            "classes": list(self.classes),
            "x_height": round(self.x_height, 3),
            "cap_height": round(self.cap_height, 3),
            "width": round(self.width, 3),
            "stroke_contrast": round(self.contrast, 2),
            "serif": self.serif,
            "cjk": self.cjk,
            "source": self.source,
            "licence": self.licence,
        }


# --- discovery ---------------------------------------------------------------------------------
def _pypi_font_files() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if not name.startswith("font-") and not name.startswith("font_"):
            continue
        for file in dist.files or []:
            if str(file).lower().endswith(_FONT_SUFFIXES):
                found.append((Path(str(dist.locate_file(file))), f"PyPI {name}"))
    return found


def _matplotlib_font_files() -> list[tuple[Path, str]]:
    spec = util.find_spec("matplotlib")  # locate without importing matplotlib
    if spec is None or spec.origin is None:
        return []
    folder = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"
    # only the DejaVu text faces: the others there are TeX math and symbol fonts
    return [(p, "matplotlib mpl-data") for p in sorted(folder.glob("DejaVu*.ttf"))] if folder.is_dir() else []


def _fontconfig_font_files() -> list[tuple[Path, str]]:
    binary = shutil.which("fc-list")
    if binary is None:
        return []
    try:
        output = subprocess.run(
            [binary, "--format", "%{file}\n"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("fc-list failed (%s); system fonts are skipped", exc)
        return []
    files = sorted({line.strip() for line in output.splitlines() if line.strip().lower().endswith(_FONT_SUFFIXES)})
    return [(Path(f), "fontconfig") for f in files]


def font_files() -> list[tuple[Path, str]]:
    seen: set[str] = set()
    result = []
    for path, source in (*_pypi_font_files(), *_matplotlib_font_files(), *_fontconfig_font_files()):
        key = os.path.realpath(path)
        if key in seen or not path.is_file():
            continue
        seen.add(key)
        result.append((path, source))
    return result


@lru_cache(maxsize=1)
def _family_data() -> dict[str, dict[str, Any]]:
    text = resources.files("kiln.apps.packaging").joinpath("data/fonts.json").read_text(encoding="utf-8")
    return dict(json.loads(text)["families"])


def _licence_from_name(text: str) -> str:
    lowered = text.lower()
    if "open font license" in lowered or "scripts.sil.org/ofl" in lowered or "openfontlicense" in lowered:
        return "OFL-1.1"
    if "apache" in lowered:
        return "Apache-2.0"
    if "bitstream" in lowered or "dejavu" in lowered:
        return "Bitstream Vera / DejaVu (free)"
    if "ubuntu font licence" in lowered:
        return "Ubuntu Font Licence"
    return text.strip()[:80] or "unknown (see the font's name table)"


# --- measurement -------------------------------------------------------------------------------
def _stroke_contrast(path: str, index: int) -> float:
    """Thickest / thinnest stroke of "o": horizontal run at mid-height vs vertical run at mid-width."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(path, 160, index=index)
    image = Image.new("L", (220, 240), 0)
    ImageDraw.Draw(image).text((20, 10), "o", font=font, fill=255)
    ink = np.asarray(image) > 128
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        return 1.0
    mid_row, mid_col = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2

    def first_run(line: np.ndarray) -> int:
        positions = np.nonzero(line)[0]
        if positions.size == 0:
            return 0
        run = 1
        while run < positions.size and positions[run] == positions[0] + run:
            run += 1
        return run

    side = first_run(ink[mid_row, :])
    top = first_run(ink[:, mid_col])
    if min(side, top) == 0:
        return 1.0
    return float(max(side, top) / min(side, top))


def _raster_serif(path: str, index: int) -> bool:
    """Serif if the foot of "l" is much wider than its stem."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(path, 160, index=index)
    image = Image.new("L", (200, 240), 0)
    ImageDraw.Draw(image).text((40, 10), "l", font=font, fill=255)
    ink = np.asarray(image) > 128
    rows = np.nonzero(ink.any(axis=1))[0]
    if rows.size < 10:
        return False
    widths = ink.sum(axis=1)
    stem = float(np.median(widths[rows[len(rows) // 3] : rows[2 * len(rows) // 3]]))
    foot = float(widths[rows[-3]])
    return bool(stem > 0 and foot > 1.6 * stem)


def _measure(path: Path, index: int, source: str) -> FontFace | None:
    from fontTools.ttLib import TTFont, TTLibError

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # old fonts trigger timestamp warnings
    try:
        font = TTFont(str(path), fontNumber=index, lazy=True)
    except (TTLibError, OSError, ValueError) as exc:
        log.info("skipping font %s#%d: %s", path, index, exc)
        return None
    try:
        name = font["name"]
        family = name.getBestFamilyName() or path.stem
        style = name.getBestSubFamilyName() or "Regular"
        os2 = font.get("OS/2", None)
        upem = float(font["head"].unitsPerEm)
        cmap = font.getBestCmap() or {}
        glyph_set = font.getGlyphSet()
        weight = int(os2.usWeightClass) if os2 is not None else (700 if "bold" in style.lower() else 400)

        def glyph_top(char: str) -> float:
            glyph = cmap.get(ord(char))
            if glyph is None:
                return 0.0
            from fontTools.pens.boundsPen import BoundsPen

            pen = BoundsPen(glyph_set)
            glyph_set[glyph].draw(pen)
            return float(pen.bounds[3]) if pen.bounds else 0.0

        x_height = float(getattr(os2, "sxXHeight", 0) or 0) or glyph_top("x")
        cap_height = float(getattr(os2, "sCapHeight", 0) or 0) or glyph_top("H")
        hmtx = font["hmtx"]
        advances = [hmtx[cmap[ord(c)]][0] for c in "abcdefghijklmnopqrstuvwxyz" if ord(c) in cmap]
        if len(advances) < 20:
            return None  # not a Latin text font (symbols, icons)
        width = float(np.mean(advances)) / upem
        panose_serif = int(getattr(getattr(os2, "panose", None), "bSerifStyle", 0) or 0)
        panose_family = int(getattr(getattr(os2, "panose", None), "bFamilyType", 0) or 0)
        monospace = bool(font["post"].isFixedPitch) if "post" in font else False
        cjk = _CJK_SAMPLE in cmap
        licence_text = name.getDebugName(13) or name.getDebugName(14) or ""
    except (KeyError, AttributeError, TTLibError, ValueError) as exc:
        log.info("skipping font %s#%d: %s", path, index, exc)
        return None
    finally:
        font.close()
    data = _family_data().get(family, {})
    known = set(data.get("classes", []))
    if known & {"serif", "sans", "handwritten", "rounded"}:
        serif = "serif" in known  # the curated class beats PANOSE fields some fonts leave wrong
    elif 2 <= panose_serif <= 10:
        serif = True
    elif 11 <= panose_serif <= 13:
        serif = False
    else:
        serif = _raster_serif(str(path), index)
    contrast = _stroke_contrast(str(path), index)
    classes = set(known)
    if not known & {"handwritten", "rounded"}:
        classes.add("serif" if serif else "sans")
    if serif and contrast < 1.4:
        classes.add("slab")
    if contrast >= 2.2:
        classes.add("high_contrast")
    if width < 0.44:
        classes.add("condensed")
    if weight >= 800:
        classes.add("heavy")
    if weight <= 300:
        classes.add("light")
    if monospace:
        classes.add("mono")
    if panose_family == 3:
        classes.add("handwritten")
    if cjk:
        classes.add("cjk_serif" if serif else "cjk_sans")
    return FontFace(
        path=str(path),
        index=index,
        family=family,
        style=style,
        weight=weight,
        source=str(data.get("source", source)),
        licence=str(data.get("licence") or _licence_from_name(licence_text)),
        classes=tuple(sorted(classes)),
        x_height=x_height / upem,
        cap_height=cap_height / upem,
        width=width,
        contrast=contrast,
        serif=serif,
        monospace=monospace,
        cjk=cjk,
    )


def _faces_in(path: Path) -> list[tuple[int, str, str, int, bool]]:
    """(index, family, style, weight, italic) of every face in a font file, read cheaply."""
    from fontTools.ttLib import TTCollection, TTFont, TTLibError

    try:
        count = len(TTCollection(str(path), lazy=True).fonts) if path.suffix.lower() == ".ttc" else 1
        faces = []
        for index in range(count):
            font = TTFont(str(path), fontNumber=index, lazy=True)
            try:
                name = font["name"]
                os2 = font.get("OS/2", None)
                style = name.getBestSubFamilyName() or "Regular"
                weight = int(os2.usWeightClass) if os2 is not None else 400
                italic = bool(os2.fsSelection & 1) if os2 is not None else "italic" in style.lower()
                italic = italic or any(w in style.lower() for w in ("italic", "oblique"))
                faces.append((index, name.getBestFamilyName() or path.stem, style, weight, italic))
            finally:
                font.close()
        return faces
    except (TTLibError, OSError, ValueError, KeyError) as exc:
        log.info("skipping font file %s: %s", path, exc)
        return []


def _keep_family(family: str) -> bool:
    """One regional variant of CJK families (Simplified Chinese) and no CJK mono variants."""
    if "CJK" in family:
        return family.endswith(" SC") and "Mono" not in family
    return not any(word in family for word in ("Math", "Last Resort", "STIX", "Symbol", "Emoji"))


def _cache_path() -> Path:
    from kiln.config import get_settings

    return get_settings().cache_dir / "packaging" / f"fonts-v{CACHE_VERSION}.json"


def discover_fonts(cache: Path | None = None) -> list[FontFace]:
    """Regular and bold upright faces of every installed family, measured (cached on disk)."""
    cache_file = cache or _cache_path()
    stored: dict[str, Any] = {}
    if cache_file.is_file():
        try:
            stored = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            stored = {}
    faces: list[FontFace] = []
    fresh: dict[str, Any] = {}
    for path, source in font_files():
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{int(stat.st_mtime)}"
        if key in stored:
            fresh[key] = stored[key]
            faces.extend(FontFace(**{**f, "classes": tuple(f["classes"])}) for f in stored[key])
            continue
        by_family: dict[str, list[tuple[int, str, str, int, bool]]] = {}
        for entry in _faces_in(path):
            if _keep_family(entry[1]) and not entry[4]:
                by_family.setdefault(entry[1], []).append(entry)
        measured = []
        for family_faces in by_family.values():
            for index, _, _, weight, _ in family_faces:
                if weight in (400, 700) or (weight in (300, 500, 600) and len(family_faces) == 1):
                    measured_face = _measure(path, index, source)
                    if measured_face is not None:
                        measured.append(measured_face)
        fresh[key] = [asdict(f) for f in measured]
        faces.extend(measured)
    if fresh != stored:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(fresh))
            tmp.replace(cache_file)
        except OSError as exc:
            log.warning("cannot write the font cache %s: %s", cache_file, exc)
    # one face per (family, weight): fontconfig and matplotlib may both provide DejaVu
    unique: dict[tuple[str, int], FontFace] = {}
    for face in faces:
        unique.setdefault((face.family, face.weight), face)
    return sorted(unique.values(), key=lambda f: (f.family, f.weight))


_LIBRARY_LOCK = threading.Lock()
_LIBRARY: list[FontFace] | None = None


def font_library() -> list[FontFace]:
    """The discovered faces, measured once per process."""
    global _LIBRARY
    with _LIBRARY_LOCK:
        if _LIBRARY is None:
            _LIBRARY = discover_fonts()
            if not _LIBRARY:
                raise KilnError(
                    "no usable fonts found (PyPI font packages, matplotlib, fontconfig)",
                    hint="pip install font-roboto font-lato (or install matplotlib)",
                    status=503,
                )
        return _LIBRARY


# --- pairing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FontPairing:
    heading: FontFace
    body: FontFace
    accent: FontFace | None
    relation: str  # "contrast" | "kinship"
    reason: str
    score: float
    notes: tuple[str, ...] = field(default_factory=tuple)


def _class_match(face: FontFace, wanted: tuple[str, ...]) -> float:
    for rank, cls in enumerate(wanted):
        if cls in face.classes:
            return 1.0 - 0.2 * rank
    return 0.15


def _curation(face: FontFace) -> float:
    """Design families kiln installs on purpose rank a little above generic fallbacks (DejaVu)."""
    data = _family_data().get(face.family, {})
    return -0.1 if data.get("fallback") else 0.0


def _body_legibility(face: FontFace) -> float:
    if {"handwritten", "display", "condensed"} & set(face.classes) or face.weight >= 800:
        return 0.0
    score = 1.0 - min(1.0, abs(face.x_height - 0.52) / 0.12) * 0.4 - min(1.0, abs(face.width - 0.52) / 0.15) * 0.3
    if face.contrast > 2.2:
        score -= 0.3
    return max(0.0, score)


def _describe(face: FontFace) -> str:
    kind = "serif" if face.serif else "sans"
    return f"{face.id} ({kind}, x-height {face.x_height:.2f}, width {face.width:.2f}, stroke contrast {face.contrast:.1f})"


_Candidate = tuple[float, str, str, str, FontFace, FontFace]


@dataclass(frozen=True)
class _Ranking:
    pool: tuple[FontFace, ...]
    notes: tuple[str, ...]
    top: tuple[_Candidate, ...]  # the best three heading × body pairs, best first


@lru_cache(maxsize=256)
def _rank_pairs(
    faces: tuple[FontFace, ...], heading_classes: tuple[str, ...], body_classes: tuple[str, ...], needs_cjk: bool
) -> _Ranking:
    """Everything of a pairing that the seed does not choose; the same few inputs recur every request."""
    notes: list[str] = []
    pool = faces
    if needs_cjk:
        cjk = tuple(f for f in faces if f.cjk)
        if cjk:
            pool = cjk
            heading_classes = (*tuple(c for c in heading_classes if c.startswith("cjk")), "cjk_serif", "cjk_sans")
            body_classes = ("cjk_sans", "cjk_serif")
        else:
            notes.append("the brief's text is Chinese but no CJK font is installed (apt-get install fonts-noto-cjk)")
    headings = [f for f in pool if f.weight >= 400]
    bodies = [f for f in pool if 400 <= f.weight <= 500 and _body_legibility(f) > 0] or [f for f in pool if f.weight <= 500] or list(pool)
    cjk_penalty = 0.0 if needs_cjk else 0.15  # CJK faces' Latin glyphs are not their strength
    head_scores = sorted(
        ((_class_match(h, heading_classes) + (0.1 if h.weight >= 600 else 0.0) + _curation(h) - (cjk_penalty if h.cjk else 0.0), h.id, h)
         for h in headings),
        key=lambda item: (-item[0], item[1]),
    )[:10]
    body_scores = sorted(
        ((_class_match(b, body_classes) + _body_legibility(b) + _curation(b) - (0.05 if b.weight != 400 else 0.0)
          - (cjk_penalty if b.cjk else 0.0), b.id, b) for b in bodies),
        key=lambda item: (-item[0], item[1]),
    )[:10]
    # pair bonuses are at most 0.3, so the ten best of each side hold the best pairs
    candidates: list[_Candidate] = []
    for head_score, head_id, head in head_scores:
        for body_score, body_id, body in body_scores:
            if head.family == body.family and head.weight == body.weight:
                continue
            if head.family == body.family:
                relation, bonus = "kinship", 0.25
            elif head.serif != body.serif:
                relation, bonus = "contrast", 0.3
            else:
                relation, bonus = "kinship", 0.15 if abs(head.x_height - body.x_height) < 0.04 else -0.1
            candidates.append((head_score + body_score + bonus, head_id, body_id, relation, head, body))
    if not candidates:
        raise KilnError("no heading/body font combination is available", status=503)
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    return _Ranking(pool, tuple(notes), tuple(candidates[: min(3, len(candidates))]))


@lru_cache(maxsize=1024)
def _accent_options(pool: tuple[FontFace, ...], families: tuple[str, str], accent_classes: tuple[str, ...]) -> tuple[FontFace, ...]:
    options = [f for f in pool if f.family not in families and _class_match(f, accent_classes) >= 0.99]
    return tuple(sorted(options, key=lambda f: f.id))


def pair_fonts(
    faces: list[FontFace] | tuple[FontFace, ...],
    heading_classes: tuple[str, ...],
    body_classes: tuple[str, ...],
    accent_classes: tuple[str, ...],
    rng: np.random.Generator,
    *,
    needs_cjk: bool = False,
) -> FontPairing:
    """Score every heading × body combination; the seed picks among the three best."""
    ranking = _rank_pairs(tuple(faces), tuple(heading_classes), tuple(body_classes), needs_cjk)
    top = ranking.top
    score, _, _, relation, head, body = top[int(rng.integers(0, len(top)))]
    accent = None
    if accent_classes:
        options = _accent_options(ranking.pool, (head.family, body.family), tuple(accent_classes))
        if options:
            accent = options[int(rng.integers(0, len(options)))]
    diff = abs(head.x_height - body.x_height) / max(body.x_height, 1e-6)
    if relation == "contrast":
        why = f"serif against sans gives clear hierarchy; x-heights within {diff:.0%}"
    elif head.family == body.family:
        why = "one family in two weights: kinship of every proportion, hierarchy from weight"
    else:
        why = f"kindred {'serif' if head.serif else 'sans'} forms with x-heights within {diff:.0%}"
        if abs(head.contrast - body.contrast) > 0.5:
            why += f", stroke contrast {head.contrast:.1f} vs {body.contrast:.1f} separates name from text"
    reason = f"{_describe(head)} for the name over {_describe(body)} for text — {why}."
    return FontPairing(head, body, accent, relation, reason, round(score, 3), ranking.notes)
