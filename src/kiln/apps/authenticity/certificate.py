"""The public verification page of a case's certificate: what the PDF certificate links to.

A buyer holding a PDF certificate opens its printed link (signed, permanent: see
``kiln.security.signing``) and sees, served by the issuer, the case's verdict, confidence, date and
the SHA-256 of every photo, without an API key and without the photos themselves. A PDF whose
figures differ from this page, or a photo whose hash is not listed, is not what kiln analysed.
"""

from __future__ import annotations

from typing import Any

from kiln.apps.authenticity.report import TITLES, template_environment
from kiln.apps.authenticity.schemas import CaseResponse


def certificate_document(case: CaseResponse) -> dict[str, Any]:
    """The certified facts of a case, as JSON."""
    return {
        "case_id": case.case_id,
        "issued_at": case.created_at.isoformat(),
        "brand": case.brand,
        "model": case.model,
        "verdict": case.verdict,
        "confidence": round(case.confidence, 4),
        "photos": [
            {
                "index": image.index,
                "view": image.view,
                "used": image.quality.ok,
                "rejected_for": [reason.code for reason in image.quality.reasons],
                "sha256": image.sha256,
                "width": image.width,
                "height": image.height,
            }
            for image in case.images
        ],
        "engine": case.engine.model_dump(),
    }


def render_certificate(case: CaseResponse) -> str:
    """The verification page (self-contained HTML, no photos)."""
    return str(template_environment().get_template("certificate.html.j2").render(
        case=case, title=TITLES[case.verdict], issued=case.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        document=certificate_document(case),
    ))
