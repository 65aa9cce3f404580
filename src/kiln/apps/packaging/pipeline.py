"""From a brief to design directions: the packaging app's service, independent of HTTP.

``PackagingService.startup`` embeds the style prototypes through the brief-encoder engine and
loads the font library once; ``recommend`` then runs the lexicon, one encoder call, the style
score (when images are given), and per direction a layout, a font pairing and a palette. Mock-ups,
previews and heatmaps are rendered when their URL is first requested (``asset``).
Everything random is drawn from generators seeded by (brief, seed, direction), so the same brief
and seed give the same response.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from kiln.apps.packaging import exports, render, tensor_image
from kiln.apps.packaging.brief import BriefIn
from kiln.apps.packaging.colour import cmyk_converter, rgb8_to_lab_tuple, to_hex
from kiln.apps.packaging.encoder import tokenizer
from kiln.apps.packaging.engines import ENCODER_MODEL, SCORER_MODEL
from kiln.apps.packaging.fonts import FontFace, font_library, pair_fonts
from kiln.apps.packaging.layout import LARGE_BOLD_PT, LARGE_TEXT_PT, grid_shape, plan_layout
from kiln.apps.packaging.layout_metrics import gradient_map
from kiln.apps.packaging.lexicon import Match, default_lexicon
from kiln.apps.packaging.palettes import (
    BrandColour,
    ColourIntent,
    Palette,
    brand_distances,
    colour_blindness_check,
    default_needs,
    generate_palette,
)
from kiln.apps.packaging.references import cover_fit, cover_fit_box, decode_data_url
from kiln.apps.packaging.saliency import saliency_map
from kiln.apps.packaging.store import LruStore, StoredDirection, StoredImage, StoredResult
from kiln.apps.packaging.styles import ROLES, StyleFit, rank_styles, rationale, taxonomy
from kiln.apps.packaging.stylescore import image_features
from kiln.errors import KilnError, NotFoundError, UnavailableError
from kiln.serve.context import InferenceClient
from kiln.serve.timing import StageTimings

_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff]")
ASSETS: dict[str, str] = {
    "mockup.png": "image/png",
    "mockup.svg": "image/svg+xml",
    "mockup.pdf": "application/pdf",
    "fonts.png": "image/png",
    "heatmap.png": "image/png",
    "palette.json": "application/json",
    "palette.css": "text/css; charset=utf-8",
    "palette.svg": "image/svg+xml",
    "palette.ase": "application/octet-stream",
}


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def colour_intent(matches: list[Match]) -> ColourIntent:
    intent = ColourIntent()
    seen: set[str] = set()
    for match in matches:
        concept = match.concept
        if concept.english in seen:
            continue
        seen.add(concept.english)
        intent.light += concept.light
        intent.cool += concept.cool
        intent.vivid += concept.vivid
        intent.hues.extend(concept.hues)
    return intent


def encoder_text(brief: BriefIn, matches: list[Match]) -> str:
    """English text for the English-only encoder: the brief's Latin words plus the English phrase of
    every Chinese term the lexicon recognised."""
    latin = _CJK.sub(" ", brief.text_for_lexicon())
    latin = " ".join(latin.replace(",", " , ").split()).strip(" ,")
    translated = []
    for match in matches:
        if match.chinese and match.concept.english not in translated:
            translated.append(match.concept.english)
    parts = [p for p in (latin, ", ".join(translated)) if p]
    return ", ".join(parts) or "product packaging"


@dataclass(frozen=True)
class PanelImage:
    """The main reference image as the panel shows it, and what the layout reads from it."""

    image: Image.Image  # cover-fit to the panel's aspect
    saliency: np.ndarray  # on the layout grid, [h, w] in [0, 1]
    gradient: np.ndarray  # Sobel magnitude on the same grid


def panel_image(image: Image.Image, panel: tuple[float, float]) -> PanelImage:
    shape = grid_shape(panel)
    main = cover_fit(image, panel[1] / panel[0])
    saliency = saliency_map(main, (shape[1], shape[0]))
    grey = np.asarray(main.convert("L").resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float64)
    return PanelImage(main, saliency, gradient_map(grey))


def panel_image_from_tensor(image: Image.Image, tensor: Any, panel: tuple[float, float]) -> PanelImage:
    """``panel_image`` of a working copy whose pixels are also ``tensor`` (CHW, on a GPU): the maps computed there."""
    shape = grid_shape(panel)
    box = cover_fit_box(image.width, image.height, panel[1] / panel[0])
    crop = tensor[:, box[1] : box[3], box[0] : box[2]]
    saliency, gradient = tensor_image.panel_maps(crop, (shape[1], shape[0]))
    return PanelImage(image.crop(box), saliency, gradient)


@dataclass
class _Prepared:
    brief: BriefIn
    images: list[Image.Image]
    digests: list[str]
    uploads: list[StoredImage | None]  # where an image came as an id: what it keeps
    tensors: list[Any]  # where a data URL was decoded on a GPU: its working copy there (else None)
    main: PanelImage | None = None  # the first image on the panel


class PackagingService:
    """State shared by the packaging routes: style embeddings, fonts, stores."""

    def __init__(self, inference: InferenceClient, *, max_results: int = 256, max_images: int = 64,
                 decode_device: str = "auto") -> None:
        self.inference = inference
        self.decode_device = decode_device
        # torch device that decodes reference JPEGs (nvJPEG on "cuda"); None: Pillow. Set at start-up.
        self.decode_on: str | None = None
        self.results: LruStore[StoredResult] = LruStore(max_results, "recommendation")
        self.images: LruStore[StoredImage] = LruStore(max_images, "reference image")
        self.style_embeddings: np.ndarray | None = None
        self.fonts: list[FontFace] = []
        self._embedding_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    # --- start-up --------------------------------------------------------------------------------
    async def startup(self) -> None:
        """Embed every style's prototypes through the engine (mean, L2-normalised); load fonts."""
        styles = taxonomy()
        texts = [p for s in styles for p in s.prototypes]
        embeddings = await self._embed(texts)
        rows, start = [], 0
        for style in styles:
            mean = embeddings[start : start + len(style.prototypes)].mean(0)
            rows.append(mean / np.linalg.norm(mean))
            start += len(style.prototypes)
        self.fonts = await asyncio.to_thread(font_library)
        self.decode_on = reference_decode_device(self.decode_device, self.inference.manifest(SCORER_MODEL).device)
        default_lexicon()
        cmyk_converter()
        self.style_embeddings = np.stack(rows).astype(np.float32)

    @property
    def ready(self) -> bool:
        return self.style_embeddings is not None

    async def _embed(self, texts: list[str]) -> np.ndarray:
        outputs = []
        for start in range(0, len(texts), 16):
            tokens = tokenizer()(texts[start : start + 16])
            result = await self.inference.infer(ENCODER_MODEL, tokens.arrays())
            outputs.append(np.asarray(result["embedding"], dtype=np.float32))
        return np.concatenate(outputs)

    async def _embed_brief(self, text: str) -> np.ndarray:
        with self._cache_lock:
            if text in self._embedding_cache:
                self._embedding_cache.move_to_end(text)
                return self._embedding_cache[text]
        vector = (await self._embed([text]))[0]
        vector = vector / max(float(np.linalg.norm(vector)), 1e-9)
        with self._cache_lock:
            self._embedding_cache[text] = vector
            while len(self._embedding_cache) > 1024:
                self._embedding_cache.popitem(last=False)
        return vector

    # --- images ----------------------------------------------------------------------------------
    def add_image(self, data: bytes, name: str) -> dict[str, Any]:
        from kiln.apps.packaging.references import decode_reference

        digest = hashlib.sha256(data).hexdigest()
        image_id = "img_" + digest[:32]
        if image_id not in self.images:
            working, (width, height) = decode_reference(data, name=name, with_size=True, device=self.decode_on)
            self.images.put(image_id, StoredImage(working, width, height, digest))
        else:
            stored = self.images.get(image_id)
            width, height = stored.width, stored.height
        return {"id": image_id, "width": width, "height": height}

    def _prepare(self, brief: BriefIn) -> _Prepared:
        images: list[Image.Image] = []
        digests: list[str] = []
        uploads: list[StoredImage | None] = []
        tensors: list[Any] = []
        for index, ref in enumerate(brief.reference_images):
            name = f"reference_images[{index}]"
            if ref.startswith("img_"):
                try:
                    stored = self.images.get(ref)
                except NotFoundError as exc:
                    raise NotFoundError(f"{name}: no uploaded image {ref!r}", hint="upload it again with POST /v1/packaging/images") from exc
                images.append(stored.image)
                digests.append(stored.digest)
                uploads.append(stored)
                tensors.append(None)
            else:
                decoded = decode_data_url(ref, name=name, device=self.decode_on)
                images.append(decoded.image)
                digests.append("")  # filled in by recommend, which hashes the data URLs meanwhile
                uploads.append(None)
                tensors.append(decoded.tensor)
        return _Prepared(brief, images, digests, uploads, tensors)

    def _prepare_with_features(self, brief: BriefIn) -> tuple[_Prepared, np.ndarray]:
        prepared = self._prepare(brief)
        return prepared, self._features(prepared)

    @staticmethod
    def _features(prepared: _Prepared) -> np.ndarray:
        """The style scorer's input, one row per image (an uploaded image keeps its row; one decoded on a
        GPU has its row computed there)."""
        rows = []
        for image, stored, tensor in zip(prepared.images, prepared.uploads, prepared.tensors, strict=True):
            if stored is not None:
                rows.append(stored.derived("features", partial(image_features, image)))
            elif tensor is not None:
                rows.append(tensor_image.image_features(tensor))
            else:
                rows.append(image_features(image))
        return np.stack(rows)

    @staticmethod
    def _panel_image(prepared: _Prepared) -> PanelImage:
        """The first image fitted to the panel, with its saliency and gradient (kept by an upload per panel
        size; computed on the GPU where the image was decoded there)."""
        panel = (prepared.brief.panel.width_mm, prepared.brief.panel.height_mm)
        stored, tensor = prepared.uploads[0], prepared.tensors[0]
        if stored is not None:
            return stored.derived(("panel", panel), partial(panel_image, prepared.images[0], panel))
        if tensor is not None:
            return panel_image_from_tensor(prepared.images[0], tensor, panel)
        return panel_image(prepared.images[0], panel)

    # --- recommend -------------------------------------------------------------------------------
    async def recommend(self, brief: BriefIn, *, base_url: str = "/v1/packaging") -> tuple[dict[str, Any], dict[str, float]]:
        """The response body and timings (ms) per stage.

        What needs only the brief's text (lexicon, encoder) runs beside what needs only its images:
        the decode (with the scorer's features) and the data URLs' digests, then the style scorer
        engine beside the main image's saliency. So "encoder" overlaps "images" and "style_score"
        (which holds the saliency)."""
        if self.style_embeddings is None:
            raise UnavailableError("the packaging app is still starting (embedding the style taxonomy)", retry_after_s=2)
        style_embeddings = self.style_embeddings
        timings = StageTimings()

        async def images() -> tuple[_Prepared, np.ndarray | None]:
            if not brief.reference_images:
                return _Prepared(brief, [], [], [], []), None
            with timings.measure("images"):
                # hashlib releases the GIL on large inputs: the digests cost no time next to the decode.
                # The scorer's features are computed in the decoding thread (one hand-off, and no second
                # thread contending for the interpreter lock with it)
                (prepared, features), url_digests = await asyncio.gather(
                    asyncio.to_thread(self._prepare_with_features, brief), asyncio.to_thread(_data_url_digests, brief.reference_images))
            prepared.digests = [d or u for d, u in zip(prepared.digests, url_digests, strict=True)]
            with timings.measure("style_score"):
                # the scorer engine runs while the panel image's saliency is computed
                scored, prepared.main = await asyncio.gather(
                    self.inference.infer(SCORER_MODEL, {"features": features}), asyncio.to_thread(self._panel_image, prepared))
            return prepared, np.asarray(scored["probabilities"], dtype=np.float64).mean(0)

        async def encoder() -> tuple[Any, str, np.ndarray]:
            with timings.measure("encoder"):
                segmentation = default_lexicon().segment(brief.text_for_lexicon())
                text = encoder_text(brief, segmentation.matches)
                brief_vector = await self._embed_brief(text)
                return segmentation, text, style_embeddings @ brief_vector

        (prepared, image_scores), (segmentation, text, similarities) = await asyncio.gather(images(), encoder())
        with timings.measure("directions"):
            fits = rank_styles(segmentation.matches, similarities, image_scores)[: brief.count]
            key = _result_key(brief, prepared.digests)
            response, directions = await asyncio.to_thread(
                self._directions, prepared, fits, segmentation.matches, image_scores, key, base_url
            )
        response["brief"] = {
            "terms": [{"term": m.surface, "english": m.concept.english, "kind": m.concept.kind} for m in segmentation.matches],
            "unrecognised": segmentation.unknown,
            "encoder_text": text,
            "colour_intent": _intent_dict(colour_intent(segmentation.matches)),
        }
        self.results.put(key, StoredResult(response, directions))
        return response, timings.milliseconds()

    def _directions(
        self,
        prepared: _Prepared,
        fits: list[StyleFit],
        matches: list[Match],
        image_scores: np.ndarray | None,
        key: str,
        base_url: str,
    ) -> tuple[dict[str, Any], list[StoredDirection]]:
        brief = prepared.brief
        panel = (brief.panel.width_mm, brief.panel.height_mm)
        main = prepared.main.image if prepared.main else None
        saliency = prepared.main.saliency if prepared.main else None
        gradient = prepared.main.gradient if prepared.main else None
        intent = colour_intent(matches)
        brand = [BrandColour(c.hex, c.locked) for c in brief.brand_colors]
        texts = _panel_texts(brief)
        needs_cjk = any(has_cjk(t) for t in (texts["name"], texts["tagline"], *texts["claims"]))
        converter = cmyk_converter()
        brief_hash = int(key[:8], 16)
        result_url = f"{base_url}/results/{key}"
        out: list[dict[str, Any]] = []
        stored: list[StoredDirection] = []
        for index, fit in enumerate(fits):
            rng = np.random.default_rng([brief.seed, index, brief_hash])
            style = fit.style
            layout = plan_layout(panel, align=style.align, margin=style.margin, rng=rng, saliency=saliency, gradient=gradient)
            pairing = pair_fonts(self.fonts, style.heading_fonts, style.body_fonts, style.accent_fonts, rng, needs_cjk=needs_cjk)
            sizes = render.fitted_sizes(pairing, layout, {"name": texts["name"], "tagline": texts["tagline"],
                                                          "claims": "  ".join(texts["claims"]) + " " * 8, "legal": texts["legal"]})
            large = sizes["name"] >= LARGE_TEXT_PT or (pairing.heading.weight >= 700 and sizes["name"] >= LARGE_BOLD_PT)
            palette = generate_palette(style, intent, brand, default_needs(large), rng)
            palette_dict = _palette_dict(palette, brand, converter, style.name)
            claims_on_accent = any(p.need.background == "accent" for p in palette.pairs)
            spec = render.MockupSpec(
                panel_mm=panel, colours=palette.colours, pairing=pairing, layout=layout,
                name=texts["name"], tagline=texts["tagline"], claims=texts["claims"], legal=texts["legal"],
                claims_on_accent=claims_on_accent, decoration=style.decoration, seed=brief.seed * 31 + index,
                image=main, sizes_pt=sizes,
            )
            url = f"{result_url}/directions/{index}"
            out.append({
                "index": index,
                "style": {
                    "id": style.id, "name": style.name, "name_zh": style.name_zh, "fit": fit.fit,
                    "scores": {"lexicon": fit.lexicon, "encoder": fit.encoder, "image": None if fit.image is None else round(fit.image, 4)},
                    "rationale": rationale(fit, brief.product, brief.audience),
                },
                "palette": palette_dict,
                "fonts": {
                    "heading": pairing.heading.summary(),
                    "body": pairing.body.summary(),
                    "accent": pairing.accent.summary() if pairing.accent else None,
                    "relation": pairing.relation,
                    "reason": pairing.reason,
                    "notes": list(pairing.notes),
                    "sizes_pt": {k: round(v, 1) for k, v in sizes.items()},
                    "preview_url": f"{url}/fonts.png",
                },
                "layout": {
                    "template": layout.template,
                    "align": layout.align,
                    "elements": [e.as_dict(panel) for e in layout.elements],
                    "metrics": layout.metrics.as_dict(),
                    "saliency_source": "reference image" if saliency is not None else "default product area",
                    "heatmap_url": f"{url}/heatmap.png",
                },
                "image_style_score": None if image_scores is None else {
                    s.id: round(float(p), 4) for s, p in zip(taxonomy(), image_scores, strict=True)
                },
                "mockup": {"png_url": f"{url}/mockup.png", "svg_url": f"{url}/mockup.svg", "pdf_url": f"{url}/mockup.pdf"},
                "exports": {
                    "json_url": f"{url}/palette.json", "css_url": f"{url}/palette.css",
                    "svg_url": f"{url}/palette.svg", "ase_url": f"{url}/palette.ase",
                },
            })
            stored.append(StoredDirection(spec, palette_dict))
        response = {"id": key, "result_url": result_url, "panel": {"width_mm": panel[0], "height_mm": panel[1]}, "directions": out}
        return response, stored

    # --- assets ----------------------------------------------------------------------------------
    def result(self, key: str) -> dict[str, Any]:
        return self.results.get(key).response

    def asset(self, key: str, index: int, name: str) -> tuple[bytes, str]:
        """Render (first time) or return a stored asset of one direction."""
        if name not in ASSETS:
            raise NotFoundError(f"no asset {name!r}", hint="assets: " + ", ".join(ASSETS))
        stored = self.results.get(key)
        if not 0 <= index < len(stored.directions):
            raise NotFoundError(f"recommendation {key} has no direction {index}")
        direction = stored.directions[index]
        with direction.lock:
            if name not in direction.assets:
                direction.assets[name] = _RENDERERS[name](direction, key, index)
            return direction.assets[name], ASSETS[name]


def reference_decode_device(setting: str, scorer_device: str) -> str | None:
    """Where reference JPEGs are decoded: "auto" follows the style scorer onto a GPU when torch and
    torchvision can decode there, else Pillow on the CPU (None); "cpu" always Pillow; "cuda" insists."""
    if setting not in ("auto", "cpu", "cuda"):
        raise KilnError(f"decode device {setting!r} is not auto, cpu or cuda")
    if setting == "cpu":
        return None
    wanted = scorer_device if setting == "auto" else "cuda"
    if not wanted.startswith("cuda"):
        return None
    try:
        import torch
        import torchvision  # noqa: F401

        available = bool(torch.cuda.is_available())
    except ImportError:
        available = False
    if available:
        return wanted
    if setting == "cuda":
        raise KilnError("reference images were to be decoded on the GPU (KILN_DECODE_DEVICE=cuda) but torch sees no "
                        "CUDA GPU or torchvision is missing", hint="set KILN_DECODE_DEVICE=auto or cpu")
    return None


def _data_url_digests(references: list[str]) -> list[str]:
    """SHA-256 of each data URL as sent (the result key's name for the image); "" for uploaded ids."""
    # surrogatepass: a malformed URL must fail in the decoder (a 400 naming it), never here
    return ["" if ref.startswith("img_") else hashlib.sha256(ref.encode("utf-8", "surrogatepass")).hexdigest() for ref in references]


def _result_key(brief: BriefIn, digests: list[str]) -> str:
    canonical = brief.model_dump(mode="json")
    canonical["reference_images"] = digests
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def _intent_dict(intent: ColourIntent) -> dict[str, Any]:
    return {"light": round(intent.light, 2), "cool": round(intent.cool, 2), "vivid": round(intent.vivid, 2),
            "hues": [list(h) for h in intent.hues]}


def _panel_texts(brief: BriefIn) -> dict[str, Any]:
    chinese = has_cjk(brief.text_for_lexicon()) and not re.search(r"[A-Za-z]{3}", str(brief.keywords))
    name = brief.display_name()
    keywords = str(brief.keywords)
    tagline = brief.tagline or (keywords[:40] if keywords else (brief.audience[:40] or " "))
    claims = brief.claims or (["卖点一", "卖点二"] if chinese else ["Claim one", "Claim two"])
    legal = "净含量 · 配料 · 生产信息" if chinese else "Net content · ingredients · legal text"
    return {"name": name, "tagline": tagline, "claims": claims, "legal": legal}


def _palette_dict(palette: Palette, brand: list[BrandColour], converter: Any, style_name: str) -> dict[str, Any]:
    colours = [palette.colours[r] for r in ROLES]
    cmyk = converter.convert(colours)
    distances = brand_distances(palette, brand) if brand else {}
    entries = []
    for role, rgb, cmyk_values in zip(ROLES, colours, cmyk, strict=True):
        lab = rgb8_to_lab_tuple(rgb)
        entries.append({
            "role": role,
            "hex": to_hex(rgb),
            "rgb": list(rgb),
            "lab": [round(float(v), 2) for v in lab],
            "cmyk": [float(v) for v in cmyk_values],
            "locked": role in palette.locked,
            "from_brand": palette.locked.get(role) or palette.adjusted_brand.get(role),
            "delta_e_brand": distances.get(role, {}),
        })
    return {
        "style": style_name,
        "mode": palette.mode,
        "harmony": palette.harmony,
        "base_hue": palette.base_hue,
        "colours": entries,
        "contrast": [
            {
                "usage": p.need.usage, "foreground": p.need.foreground, "background": p.need.background,
                "ratio": p.ratio, "minimum": p.need.minimum, "level": p.need.level, "passes": p.passes,
            }
            for p in palette.pairs
        ],
        "colour_blindness": colour_blindness_check(palette),
        "cmyk_method": converter.description,
        "notes": palette.notes,
    }


def _render_mockup_png(d: StoredDirection, key: str, index: int) -> bytes:
    return render.render_png(d.spec)


def _render_fonts_png(d: StoredDirection, key: str, index: int) -> bytes:
    spec = d.spec
    sample = spec.tagline if spec.tagline.strip() else "The quick brown fox jumps over the lazy dog"
    if not has_cjk(sample):
        sample = f"{sample}. The quick brown fox jumps over the lazy dog 0123456789"
    return render.font_preview_png(spec.pairing, spec.name, sample, spec.colours)


_RENDERERS: dict[str, Callable[[StoredDirection, str, int], bytes]] = {
    "mockup.png": _render_mockup_png,
    "mockup.svg": lambda d, k, i: render.render_svg(d.spec),
    "mockup.pdf": lambda d, k, i: render.render_pdf(d.spec, d.palette),
    "fonts.png": _render_fonts_png,
    "heatmap.png": lambda d, k, i: render.heatmap_png(d.spec.layout),
    "palette.json": lambda d, k, i: exports.palette_json(d.palette),
    "palette.css": lambda d, k, i: exports.palette_css(d.palette),
    "palette.svg": lambda d, k, i: exports.palette_svg(d.palette),
    "palette.ase": lambda d, k, i: exports.palette_ase(d.palette, f"kiln {d.palette['style']} {i + 1}"),
}
