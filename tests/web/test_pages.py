"""End-to-end: chromium (Playwright) on the pages of a real ``kiln serve`` over the tiny demo."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
# Screenshots go to a temporary folder unless KILN_SCREENSHOTS names one (the README's come from
# `KILN_SCREENSHOTS=docs/screenshots pytest -m browser tests/web/test_pages.py`), so a test run leaves the tree as it was.
SCREENSHOTS_ENV = "KILN_SCREENSHOTS"
PAGES = {"home": "/", "authenticate": "/authenticate", "cases": "/cases", "packaging": "/packaging", "ops": "/ops"}
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}


def run_sample_case(page: Any, label: str = "counterfeit") -> None:
    page.goto("/authenticate")
    page.get_by_role("button", name=f"Sample: {label}").first.click()
    page.wait_for_selector("#photos li.photo img.thumb >> nth=5")
    page.get_by_role("button", name="Authenticate", exact=True).click()
    page.wait_for_selector(".verdict .word")


def submit_chinese_brief(page: Any) -> None:
    page.goto("/packaging")
    page.get_by_label("Product", exact=True).fill("气泡茶饮料")
    page.get_by_label("Audience").fill("年轻女性")
    page.get_by_label("Keywords (English or Chinese)").fill("清新 自然 简约 活力")
    page.get_by_label("Product name on the mock-up (optional)").fill("山茶气泡")
    page.get_by_role("button", name="Recommend").click()
    page.wait_for_selector("article.direction")


def images_loaded(page: Any, selector: str) -> list[bool]:
    """Waits for the images to finish loading; True for each one that decoded."""
    page.wait_for_function(
        "s => Array.from(document.querySelectorAll(s)).every(i => i.complete)", arg=selector, timeout=60_000
    )
    return list(page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.naturalWidth > 0)"))


def test_sample_case_shows_verdict_and_heatmaps(page: Any) -> None:
    run_sample_case(page, "counterfeit")
    assert page.inner_text(".verdict .word").strip().lower() in {"authentic", "counterfeit", "inconclusive"}
    assert "Confidence" in page.inner_text(".verdict")
    heatmaps = images_loaded(page, "#result .heat img.overlay")
    assert len(heatmaps) == 6 and all(heatmaps)
    # The heatmap toggle hides the overlay of its photo, and the opacity slider changes it.
    first = page.locator("#result .heat").first
    first.get_by_label("Opacity").fill("20")
    assert first.locator("img.overlay").evaluate("i => i.style.opacity") == "0.2"
    first.get_by_label("Heatmap").uncheck()
    assert first.locator("img.overlay").is_hidden()
    # Report links and the case list.
    assert page.get_by_role("link", name="PDF certificate").get_attribute("href").endswith("/report.pdf")
    case_id = page.evaluate("new URLSearchParams(location.search).get('case')")
    page.goto("/cases")
    page.wait_for_selector("#cases tbody tr")
    assert page.locator(f"#cases a[href='/authenticate?case={case_id}']").count() == 1
    page.select_option("#f-verdict", "authentic" if page.locator("#cases tbody tr").first.inner_text().count("authentic") == 0 else "counterfeit")
    page.get_by_role("button", name="Show cases").click()
    page.wait_for_function("() => !document.getElementById('count').textContent.startsWith('Loading')")
    assert page.console.errors == []


def test_chinese_brief_shows_directions_with_mockups(page: Any) -> None:
    submit_chinese_brief(page)
    cards = page.locator("article.direction")
    assert cards.count() >= 3
    mockups = images_loaded(page, "article.direction img.mockup")
    assert len(mockups) == cards.count() and all(mockups)
    first = cards.first
    assert first.locator(".swatch").count() >= 4
    assert first.locator(".badges li").count() >= 1
    assert first.get_by_role("link", name="ASE").get_attribute("href").endswith("/palette.ase")
    assert "清新" in page.inner_text("#understood")
    assert page.console.errors == []


def test_non_image_upload_shows_error_next_to_the_photo(page: Any) -> None:
    page.goto("/authenticate")
    page.wait_for_selector("#samples button")
    page.set_input_files("#files", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}])
    error = page.locator("#photos li.photo .error").first
    error.wait_for()
    assert "not a JPEG, PNG or WebP photo" in error.inner_text()
    # Bytes that claim to be a JPEG but are not one.
    page.set_input_files("#files", files=[{"name": "fake.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8 broken"}])
    page.wait_for_function("() => document.querySelectorAll('#photos li.photo.has-error').length === 2")
    assert "cannot be read as an image" in page.locator("#photos li.photo .error").nth(1).inner_text()
    page.get_by_label("Brand").fill("aurelle")
    page.get_by_label("Model").fill("celeste")
    page.get_by_role("button", name="Authenticate", exact=True).click()
    assert "Photo 1 cannot be used" in page.inner_text("#form-error")
    assert page.console.errors == []


def test_api_errors_are_shown_next_to_the_field(page: Any) -> None:
    page.goto("/packaging")
    page.get_by_label("Keywords (English or Chinese)").fill("fresh, natural")
    for _ in range(5):
        page.get_by_role("button", name="Add a brand colour").click()
    for index in range(5):
        page.locator(f"#colours .colour-row >> nth={index}").get_by_label("Locked").check()
    with page.expect_response("**/v1/packaging/recommend") as response:
        page.get_by_role("button", name="Recommend").click()
    assert response.value.status == 422
    message = page.locator("#brand_colors-error")
    message.wait_for()
    assert "lock" in message.inner_text().lower()
    assert "need attention" in page.inner_text("#brief-error")


def small_png(data: bytes) -> bytes:
    """A screenshot as a 128-colour PNG (a fraction of the size; fine for pages)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    # through the DevTools protocol, not a <script> element, so the page's own CSP (script-src 'self') stays on
    page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5)}));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("width", list(WIDTHS))
def test_pages_have_no_console_errors_pass_axe_and_are_captured(browser: Any, server: Any, width: str, tmp_path: Path) -> None:
    w, h = WIDTHS[width]
    screenshots = Path(os.environ[SCREENSHOTS_ENV]) if os.environ.get(SCREENSHOTS_ENV) else tmp_path
    context = browser.new_context(viewport={"width": w, "height": h}, base_url=server.url, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(60_000)
    from tests.web.conftest import ConsoleLog

    console = ConsoleLog(page)
    problems: dict[str, Any] = {}
    try:
        for name, path in PAGES.items():
            if name == "authenticate":
                run_sample_case(page, "authentic")
                images_loaded(page, "#result .heat img")
                page.evaluate("document.getElementById('result').scrollIntoView()")
            elif name == "packaging":
                submit_chinese_brief(page)
                images_loaded(page, "article.direction img.mockup")
                page.evaluate("document.getElementById('results').scrollIntoView()")
            elif name == "ops":
                page.goto(path)
                # Some traffic, so that the charts have something to show.
                page.evaluate("""() => { window.kilnLoad = (async () => {
                    const words = ["fresh", "calm", "bold", "warm", "playful", "luxury", "natural", "minimal", "retro", "vivid"];
                    for (let i = 0; i < 40; i++) {
                        const keywords = `${words[i % 10]}, ${words[(i * 3 + 1) % 10]} tea ${Math.random().toString(36).slice(2, 7)}`;
                        await fetch("/v1/packaging/recommend", {method: "POST", headers: {"Content-Type": "application/json"},
                            body: JSON.stringify({keywords, count: 1})});
                        await new Promise(done => setTimeout(done, 150));
                    }
                })(); }""")
                page.wait_for_timeout(7000)  # the screenshot is taken while the traffic runs
            else:
                page.goto(path)
                page.wait_for_load_state("networkidle")
            violations = axe_violations(page)
            if violations:
                problems[name] = violations
            if name == "authenticate":  # the form, before it is filled, is checked as well
                page.goto("/authenticate")
                page.wait_for_selector("#samples button")
                if violations := axe_violations(page):
                    problems["authenticate (empty form)"] = violations
                run_sample_case(page, "authentic")
                images_loaded(page, "#result .heat img")
                page.evaluate("document.getElementById('result').scrollIntoView()")
            screenshots.mkdir(parents=True, exist_ok=True)
            (screenshots / f"{name}-{width}.png").write_bytes(small_png(page.screenshot()))
            if name == "ops":
                page.evaluate("() => window.kilnLoad")  # let the traffic finish before the page closes
        scroll = page.evaluate("document.documentElement.scrollWidth")
    finally:
        context.close()
    assert problems == {}, json.dumps(problems, indent=1)
    assert console.errors == []
    assert scroll <= w, "the last page scrolls sideways"
