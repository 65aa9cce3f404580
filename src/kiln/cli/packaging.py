"""``kiln packaging``: build the packaging engines and run a brief from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from kiln.errors import KilnError

packaging_app = typer.Typer(help="Packaging design recommendation: engines and briefs.", no_args_is_help=True)


@packaging_app.command("build-engines")
def build_engines_cmd(
    out: Annotated[Path, typer.Option("--out", help="model repository to write (REPO/brief_encoder, REPO/style_scorer)")],
    force: Annotated[bool, typer.Option(help="rebuild and retrain even if current engines exist")] = False,
    encoder_calibration: Annotated[str, typer.Option(help="dynamic | static (int8 of the brief encoder)")] = "dynamic",
) -> None:
    """Export, quantise and check the brief encoder; train and build the style scorer."""
    from kiln.apps.packaging.engines import build_engines
    from kiln.cli.console import console
    from kiln.progress import RichReporter

    report = build_engines(out, reporter=RichReporter(), force=force, encoder_calibration=encoder_calibration)
    for engine in report.engines:
        checks = ", ".join(f"{k} {v:g}" for k, v in engine.checks.items())
        console.print(f"[bold]{engine.model}[/]: {engine.precision} ({engine.calibration}); {checks}; {engine.build_seconds:g} s")
        for note in engine.notes:
            console.print(f"  note: {note}")
    console.print(str(Path(out).resolve()))


def _load_brief(text: str) -> dict[str, Any]:
    source = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise KilnError(f"--brief {text!r} is neither JSON nor a file", hint='pass --brief \'{"keywords": "fresh"}\' or a .json file')
        source = path.read_text(encoding="utf-8")
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        raise KilnError(f"--brief is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise KilnError("--brief must be a JSON object")
    return data


@packaging_app.command("recommend")
def recommend_cmd(
    brief: Annotated[str, typer.Option("--brief", help="the brief as JSON, or a path to a .json file")],
    repo: Annotated[Path | None, typer.Option(help="model repository from build-engines (default: $KILN_HOME/packaging-models)")] = None,
    out: Annotated[Path | None, typer.Option(help="folder to write the response and every direction's assets into")] = None,
) -> None:
    """Run a brief through the packaging engines in this process and print the directions."""
    from pydantic import ValidationError

    from kiln.apps.packaging.brief import BriefIn
    from kiln.apps.packaging.engines import ENCODER_MODEL, SCORER_MODEL
    from kiln.apps.packaging.pipeline import ASSETS, PackagingService
    from kiln.cli.console import console
    from kiln.config import get_settings
    from kiln.serve.context import DirectInference

    try:
        parsed = BriefIn.model_validate(_load_brief(brief))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'brief'}: {e['msg']}" for e in exc.errors())
        raise KilnError(f"invalid brief: {problems}") from None
    root = repo or get_settings().home / "packaging-models"
    missing = [m for m in (ENCODER_MODEL, SCORER_MODEL) if not (root / m / "1" / "manifest.json").is_file()]
    if missing:
        raise KilnError(f"no {', '.join(missing)} engine in {root}", hint=f"run: kiln packaging build-engines --out {root}")
    inference = DirectInference.from_dirs({m: root / m / "1" for m in (ENCODER_MODEL, SCORER_MODEL)})
    service = PackagingService(inference)

    async def run() -> dict[str, Any]:
        await service.startup()
        response, _ = await service.recommend(parsed)
        return response

    response = asyncio.run(run())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "response.json").write_text(json.dumps(response, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for direction in response["directions"]:
            folder = out / f"direction-{direction['index'] + 1}-{direction['style']['id']}"
            folder.mkdir(exist_ok=True)
            for asset in ASSETS:
                data, _ = service.asset(response["id"], direction["index"], asset)
                (folder / asset).write_bytes(data)
    for direction in response["directions"]:
        style = direction["style"]
        swatches = " ".join(f"{c['role']}={c['hex']}" for c in direction["palette"]["colours"])
        fonts = direction["fonts"]
        console.print(f"[bold]{direction['index'] + 1}. {style['name']}[/] (fit {style['fit']:.2f}) — {style['rationale']}")
        console.print(f"   palette ({direction['palette']['harmony']}): {swatches}")
        console.print(f"   fonts: {fonts['heading']['family']} / {fonts['body']['family']} ({fonts['relation']})")
        console.print(f"   layout: {direction['layout']['template']}, metrics {direction['layout']['metrics']}")
    if out is not None:
        console.print(str(out.resolve()))


def register(app: typer.Typer) -> None:
    app.add_typer(packaging_app, name="packaging")
