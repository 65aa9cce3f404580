"""Case reports: HTML (self-contained, photos with heatmap overlays) and a PDF certificate.

Both are rendered from the stored case (its result document and the uploaded photos), the first
time someone asks for them, and then kept in the store.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from kiln.apps.authenticity.heatmaps import overlay_jpeg
from kiln.apps.authenticity.schemas import CaseResponse

TEMPLATES = Path(__file__).with_name("templates")


@dataclass
class ReportPhoto:
    index: int
    data: bytes
    heatmap: list[list[float]]


@lru_cache(maxsize=1)
def template_environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )


def heatmap_scale(photos: list[ReportPhoto]) -> float:
    """One colour scale for every photo of a case, so strengths compare across photos."""
    values = [abs(v) for p in photos for row in p.heatmap for v in row]
    return max(values, default=1.0) or 1.0


def render_html(case: CaseResponse, photos: list[ReportPhoto], reference_previews: dict[str, bytes]) -> str:
    scale = heatmap_scale(photos)
    by_index = {p.index: p for p in photos}
    images = []
    for image in case.images:
        photo = by_index.get(image.index)
        overlay = _overlay(photo, scale) if photo else b""
        refs = [
            {"similarity": r.similarity, "preview": base64.b64encode(reference_previews[r.reference_id]).decode()}
            for r in case.references if r.photo_index == image.index and r.reference_id in reference_previews
        ]
        images.append({**image.model_dump(), "overlay": base64.b64encode(overlay).decode(), "references": refs})
    return str(template_environment().get_template("report.html.j2").render(
        case=case, images=images, created=case.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
    ))


def _overlay(photo: ReportPhoto, scale: float) -> bytes:
    return overlay_jpeg(photo.heatmap, photo.data, max_side=480, scale=scale)


def _font_path(bold: bool = False) -> str:
    from kiln.apps.authenticity.synth.text import font_dir

    return str(font_dir() / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"))


TITLES = {
    "authentic": "Certificate of authenticity",
    "counterfeit": "Authentication finding: counterfeit",
    "inconclusive": "Authentication result: inconclusive",
}


def render_pdf(case: CaseResponse, photos: list[ReportPhoto], verify_url: str) -> bytes:
    """A one- or two-page certificate: verdict, case id, timestamp, engine and every photo's SHA-256."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_font("DejaVu", "", _font_path())
    pdf.add_font("DejaVu", "B", _font_path(bold=True))
    pdf.set_title(f"{TITLES[case.verdict]} {case.case_id}")
    pdf.set_creator("kiln")
    pdf.set_subject(f"case {case.case_id}; verdict {case.verdict}; issued {case.created_at.isoformat()}")
    # Machine-readable in the document information: the SHA-256 of every photo, in order.
    pdf.set_keywords(" ".join(f"sha256:{image.sha256}" for image in case.images))
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 18)
    pdf.cell(0, 12, TITLES[case.verdict], new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 10)
    colour = {"authentic": (26, 127, 55), "counterfeit": (180, 35, 24), "inconclusive": (154, 103, 0)}[case.verdict]
    pdf.set_text_color(*colour)
    pdf.set_font("DejaVu", "B", 14)
    pdf.cell(0, 9, f"{case.verdict.upper()}  ·  confidence {case.confidence * 100:.1f}%", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("DejaVu", "", 10)
    rows = [
        ("Case", case.case_id),
        ("Issued", case.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Item", f"{case.brand} / {case.model}"),
        ("Engine", f"{case.engine.name} ({case.engine.backend}, {case.engine.precision}, {case.engine.backbone})"),
    ]
    if case.counterfeit_probability is not None:
        rows.append(("Counterfeit probability", f"{case.counterfeit_probability:.4f}"))
    for label, value in rows:
        pdf.set_font("DejaVu", "B", 10)
        pdf.cell(45, 6, label)
        pdf.set_font("DejaVu", "", 10)
        pdf.multi_cell(0, 6, value, new_x="LMARGIN", new_y="NEXT")
    if case.engine.trained_on_synthetic_data:
        pdf.ln(2)
        pdf.set_fill_color(255, 248, 197)
        pdf.multi_cell(0, 6, "Demo model trained on synthetic data: this document says nothing about a real item.",
                       fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("DejaVu", "B", 11)
    pdf.cell(0, 7, "Findings", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 9)
    for reason in [*case.reasons, *case.notes]:
        pdf.multi_cell(0, 5, f"• {reason}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("DejaVu", "B", 11)
    pdf.cell(0, 7, "Photos analysed (SHA-256 of each file as received)", new_x="LMARGIN", new_y="NEXT")
    by_index = {p.index: p for p in photos}
    scale = heatmap_scale(photos)
    for image in case.images:
        top = pdf.get_y()
        if top > 250:
            pdf.add_page()
            top = pdf.get_y()
        photo = by_index.get(image.index)
        if photo is not None:
            pdf.image(io.BytesIO(_overlay(photo, scale)), x=pdf.l_margin, y=top, w=24)
        pdf.set_xy(pdf.l_margin + 28, top)
        pdf.set_font("DejaVu", "B", 9)
        status = "used" if image.quality.ok else "rejected: " + "; ".join(r.code for r in image.quality.reasons)
        score = f", counterfeit evidence {image.score:.2f}" if image.score is not None else ""
        pdf.multi_cell(0, 5, f"{image.index + 1}. {image.view.replace('_', ' ')} ({status}{score})", new_x="LMARGIN", new_y="NEXT")
        pdf.set_x(pdf.l_margin + 28)
        pdf.set_font("DejaVu", "", 8)
        pdf.multi_cell(0, 4.5, f"{image.width}×{image.height} px  SHA-256 {image.sha256}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(max(pdf.get_y(), top + 26))
    pdf.ln(2)
    pdf.set_font("DejaVu", "", 8)
    top = pdf.get_y()
    pdf.multi_cell(0, 4.5, f"Verify this certificate at {verify_url} (no key needed): the issuer's page lists the "
                           "verdict, date and the SHA-256 of every photo. A photo whose SHA-256 differs from the value "
                           "above is not the photo that was analysed.", new_x="LMARGIN", new_y="NEXT")
    pdf.link(pdf.l_margin, top, pdf.epw, pdf.get_y() - top, verify_url)  # the paragraph opens the page
    return bytes(pdf.output())
