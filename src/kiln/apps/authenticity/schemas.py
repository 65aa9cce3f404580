"""The HTTP API's documents (response models, shown in the OpenAPI docs)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class QualityReason(BaseModel):
    code: str = Field(description="resolution | blur | underexposed | overexposed | glare | wrong_view | out_of_distribution")
    message: str
    guidance: str


class PhotoQuality(BaseModel):
    ok: bool = Field(description="false: the photo was rejected and did not contribute to the verdict")
    reasons: list[QualityReason] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)


class ImageResult(BaseModel):
    index: int = Field(description="position of the photo in the request")
    view: str
    quality: PhotoQuality
    score: float | None = Field(description="calibrated counterfeit evidence of this photo (0..1); null when rejected")
    region: str | None = Field(None, description="where in the photo the evidence was strongest")
    view_similarity: float = Field(description="cosine similarity to the claimed view's training photos")
    sha256: str
    width: int
    height: int
    image_url: str
    heatmap_url: str = Field(description="transparent PNG to layer over the photo (red: counterfeit evidence, blue: authentic)")
    overlay_url: str = Field(description="the photo with the heatmap blended in (JPEG)")


class ReferenceResult(BaseModel):
    reference_id: str
    view: str
    similarity: float = Field(description="cosine similarity of embeddings, -1..1")
    photo_index: int = Field(description="the photo of this case it was compared with")
    image_url: str


class EngineInfo(BaseModel):
    name: str
    precision: str
    backend: str
    backbone: str
    trained_on_synthetic_data: bool


class CaseResponse(BaseModel):
    case_id: str
    created_at: datetime
    brand: str
    model: str
    verdict: str = Field(description="authentic | counterfeit | inconclusive")
    confidence: float = Field(description="calibrated probability that the verdict is right")
    counterfeit_probability: float | None = Field(description="calibrated probability that the item is counterfeit")
    reasons: list[str]
    images: list[ImageResult]
    references: list[ReferenceResult]
    notes: list[str] = Field(default_factory=list)
    engine: EngineInfo
    report_url: str = Field(description="HTML report")
    pdf_url: str = Field(description="PDF certificate")
    json_url: str


class CaseSummary(BaseModel):
    case_id: str
    created_at: datetime
    brand: str
    model: str
    verdict: str
    confidence: float
    case_url: str
    report_url: str


class CaseList(BaseModel):
    total: int = Field(description="cases matching the filters, counted up to 10,000")
    total_capped: bool = Field(default=False, description="more cases match than total says (counting stops at 10,000)")
    limit: int
    offset: int
    cases: list[CaseSummary]


class JobResponse(BaseModel):
    job_id: str
    status: str = Field(description="queued | running | done | failed")
    created_at: datetime
    updated_at: datetime
    attempts: int
    case_id: str | None = None
    case_url: str | None = None
    error: str | None = None
    error_status: int | None = None
    status_url: str


class ReferenceInfo(BaseModel):
    reference_id: str
    brand: str
    model: str
    view: str
    sha256: str
    created_at: datetime
    note: str
    image_url: str


class ReferenceList(BaseModel):
    references: list[ReferenceInfo]


class ViewInfo(BaseModel):
    name: str
    description: str
    trained: bool


class AppInfo(BaseModel):
    views: list[ViewInfo]
    max_photos: int
    max_file_bytes: int
    max_pixels: int
    accepted_formats: list[str]
    min_authentic_views: int
    thresholds: dict[str, float]
    engine: EngineInfo
    references: int
