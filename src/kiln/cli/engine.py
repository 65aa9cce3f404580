"""Engine commands: doctor, build, validate, profile, engines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from kiln.errors import KilnError


def _write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def doctor(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Print this machine's hardware fingerprint and runtime versions."""
    from rich.table import Table

    from kiln.cli.console import console
    from kiln.engine.hardware import fingerprint

    fp = fingerprint()
    if as_json:
        console.print_json(json.dumps(fp))
        return
    table = Table(title="kiln doctor", show_header=False)
    cpu = fp["cpu"]
    table.add_row("OS", fp["os"])
    table.add_row("CPU", f"{cpu['model']} ({cpu['arch']}, {cpu['cores']} cores)")
    table.add_row("CPU ISA", " ".join(cpu["isa"]) or "-")
    if fp["gpus"]:
        for gpu in fp["gpus"]:
            table.add_row(
                f"GPU {gpu['index']}",
                f"{gpu['name']}, compute capability {gpu['compute_capability']}, {gpu['memory_gib']} GiB, driver {gpu['driver']}",
            )
    else:
        table.add_row("GPU", "none visible to torch")
    rt = fp["runtime"]
    for key in ("python", "kiln", "torch", "torchvision", "timm", "onnx", "onnxruntime", "cuda", "cudnn"):
        table.add_row(key, str(rt.get(key) or "-"))
    table.add_row("onnxruntime providers", ", ".join(rt["onnxruntime_providers"]) or "-")
    console.print(table)


def build(
    model: Annotated[str, typer.Argument(help="timm:NAME[?opt=val], kiln:NAME, or a path to an .onnx file")],
    output: Annotated[Path, typer.Option("-o", "--output", help="engine directory to write")],
    backend: Annotated[str, typer.Option(help="onnxruntime | torch")] = "onnxruntime",
    precision: Annotated[str, typer.Option(help="fp32 | fp16 | bf16 | int8")] = "fp32",
    calib: Annotated[Path | None, typer.Option(help="folder of unlabelled images for int8 calibration")] = None,
    calib_method: Annotated[str, typer.Option(help="minmax | entropy | percentile")] = "minmax",
    calib_limit: Annotated[int, typer.Option(help="at most this many calibration images")] = 256,
    batch: Annotated[str, typer.Option(help="batch profile MIN:OPT:MAX")] = "1:8:32",
    buckets: Annotated[str | None, typer.Option(help="batch sizes to compile/warm, e.g. 1,8,64,256 (default: powers of two)")] = None,
    input_size: Annotated[str | None, typer.Option(help="H or HxW (default: the model's)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="local weights (.pt/.pth/.safetensors)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: the backend's best here)")] = None,
    validate: Annotated[Path | None, typer.Option("--validate", help="labelled ImageFolder set for the accuracy gate")] = None,
    max_drop: Annotated[float, typer.Option(help="largest accepted top-1 drop in points")] = 1.0,
    compile_mode: Annotated[str | None, typer.Option("--compile", help="torch: none | default | reduce-overhead | max-autotune")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime intra-op threads at build")] = None,
    freezing: Annotated[bool, typer.Option("--freezing", help="torch: fold weights as constants (faster, no warm-start cache)")] = False,
    fuse_conv: Annotated[bool, typer.Option("--fuse-conv", help="torch: fold batch norm and fuse bias/residual/ReLU into ResNet convolutions (cuDNN on GPU)")] = False,
    input_format: Annotated[str, typer.Option(help="float32 (normalised NCHW) | uint8 (raw NHWC pixels, normalised in the engine)")] = "float32",
    name: Annotated[str | None, typer.Option(help="engine name (default: the model name)")] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even when the cache holds this engine")] = False,
) -> None:
    """Build an optimised engine artifact (cached by content; reused when nothing changed)."""
    from kiln.cli.console import console
    from kiln.config import get_settings
    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.spec import BatchProfile, CalibrationMethod, ModelSource, Precision, parse_input_size
    from kiln.progress import RichReporter

    try:
        prec = Precision(precision)
        method = CalibrationMethod(calib_method)
    except ValueError as exc:
        raise KilnError(str(exc), hint="see `kiln build --help` for the accepted values") from exc
    if device not in (None, "cpu", "cuda"):
        raise KilnError(f"--device {device!r} is not cpu or cuda")
    if calib is not None and not calib.is_dir():
        raise KilnError(f"--calib {calib} is not a directory")
    if validate is not None and not validate.is_dir():
        raise KilnError(f"--validate {validate} is not a directory")
    options: dict[str, Any] = {}
    if compile_mode:
        options["compile"] = compile_mode
    if threads:
        options["threads"] = threads
    if freezing:
        options["freezing"] = True
    if fuse_conv:
        if backend != "torch":
            raise KilnError("--fuse-conv is a torch backend option", hint="add --backend torch")
        options["fuse_conv"] = True
    if input_format not in ("float32", "uint8"):
        raise KilnError(f"--input-format {input_format!r} is not float32 or uint8")
    if input_format != "float32":
        options["input_format"] = input_format
    settings = BuildSettings(
        source=ModelSource.parse(model, checkpoint),
        backend=backend,
        precision=prec,
        batch=BatchProfile.parse(batch, buckets),
        input_size=parse_input_size(input_size) if input_size else None,
        device=device,
        calibration_dir=calib,
        calibration_method=method,
        calibration_limit=calib_limit,
        options=options,
        name=name,
    )
    started = time.perf_counter()
    outcome = build_engine(
        settings,
        cache=EngineCache(get_settings().engine_cache_dir),
        output=output,
        validate_dir=validate,
        max_drop=max_drop,
        force=force,
        reporter=RichReporter(),
    )
    for note in outcome.notes:
        console.print(f"[yellow]accuracy gate:[/] {note}")
    fusion = outcome.manifest.build_options.get("conv_fusion")
    if fusion:
        left = "; ".join(f"{n}× {why}" for why, n in fusion["skipped"].items()) or "none"
        console.print(f"conv fusion: {fusion['folded']} convolutions folded; blocks left as they were: {left}")
    m = outcome.manifest
    how = "reused from cache" if outcome.cached else f"built in {time.perf_counter() - started:.1f}s"
    console.print(f"[green]engine[/] {output} ({m.backend} {m.precision.value} on {m.device}, {how})")
    if m.validation is not None:
        v = m.validation
        console.print(
            f"  accuracy gate passed: top-1 {v.engine_top1:.2f}% vs FP32 {v.reference_top1:.2f}% "
            f"(drop {v.drop_points:.2f} ≤ {v.max_drop}), agreement {v.top1_agreement:.2f}%, cosine {v.cosine_similarity:.4f}"
        )


def validate_cmd(
    engine: Annotated[Path, typer.Argument(help="engine directory")],
    data: Annotated[Path, typer.Option(help="labelled ImageFolder set (DIR/CLASS/*.jpg)")],
    max_drop: Annotated[float, typer.Option(help="largest accepted top-1 drop in points")] = 1.0,
    limit: Annotated[int | None, typer.Option(help="use at most this many images")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report as JSON")] = None,
) -> None:
    """The accuracy gate: engine vs its FP32 source; exits 1 when the drop exceeds --max-drop."""
    from kiln.cli.console import console
    from kiln.engine.loader import load_engine
    from kiln.engine.reference import reference_for
    from kiln.engine.validate import validate
    from kiln.progress import RichReporter

    runner = load_engine(engine)
    report = validate(runner, reference_for(engine, runner.manifest), data, max_drop=max_drop, limit=limit, reporter=RichReporter())
    runner.deactivate()
    _write_json(json_path, report.model_dump())
    colour = "green" if report.passed else "red"
    console.print(
        f"[{colour}]{'PASS' if report.passed else 'FAIL'}[/] {report.samples} images: engine top-1 {report.engine_top1:.2f}%, "
        f"FP32 {report.reference_top1:.2f}%, drop {report.drop_points:.2f} points (max {max_drop}), "
        f"agreement {report.top1_agreement:.2f}%, cosine {report.cosine_similarity:.5f}"
    )
    if not report.passed:
        raise typer.Exit(1)


def profile_cmd(
    engine: Annotated[Path, typer.Argument(help="engine directory")],
    batch: Annotated[str, typer.Option(help="comma-separated batch sizes")] = "1,8,32",
    iterations: Annotated[int, typer.Option(help="timed iterations per batch size")] = 50,
    warmup: Annotated[int, typer.Option(help="untimed iterations first")] = 5,
    max_seconds: Annotated[float, typer.Option(help="stop a batch size after this long")] = 30.0,
    baseline: Annotated[bool, typer.Option("--baseline", help="also time the source model in PyTorch eager FP32")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    trace: Annotated[Path | None, typer.Option("--trace", help="write a PyTorch profiler trace of one batch (torch engines)")] = None,
) -> None:
    """Latency p50/p95/p99, throughput and memory per batch size; --baseline reports the speed-up."""
    from rich.table import Table

    from kiln.cli.console import console
    from kiln.engine.loader import load_engine
    from kiln.engine.profile import profile_engine
    from kiln.engine.reference import reference_for
    from kiln.progress import RichReporter

    try:
        sizes = [int(x) for x in batch.split(",") if x.strip()]
    except ValueError as exc:
        raise KilnError(f"--batch {batch!r} is not a comma-separated list of integers") from exc
    if not sizes or min(sizes) < 1:
        raise KilnError("--batch needs positive batch sizes")
    started = time.perf_counter()
    runner = load_engine(engine)
    load_seconds = time.perf_counter() - started
    too_big = [s for s in sizes if s > runner.max_batch_size]
    if too_big:
        console.print(f"[yellow]skipping batch sizes {too_big}: over the engine's max batch {runner.max_batch_size}[/]")
    ref = reference_for(engine, runner.manifest, runner.manifest.device, native_inputs=True) if baseline else None
    label = "onnxruntime FP32 (unoptimised source graph)" if runner.manifest.source.kind == "onnx" else "PyTorch eager FP32"
    report = profile_engine(
        runner, sizes, iterations=iterations, warmup=warmup, max_seconds=max_seconds, load_seconds=load_seconds,
        baseline=ref, baseline_label=label if baseline else None, reporter=RichReporter(),
    )
    if trace is not None:
        from kiln.engine.trace import write_trace

        write_trace(runner, trace, batch=sizes[0])
        console.print(f"trace written to {trace}")
    runner.deactivate()
    table = Table(title=f"{report.engine} ({report.backend} {report.precision} on {report.device}); load {report.load_seconds:.2f}s")
    for col in ("batch", "p50 ms", "p95 ms", "p99 ms", "items/s", "peak MB", "baseline p50 ms", "speed-up"):
        table.add_column(col, justify="right")
    base = {b.batch: b for b in report.baseline}
    for r in report.results:
        b = base.get(r.batch)
        table.add_row(
            str(r.batch), f"{r.p50_ms:.3f}", f"{r.p95_ms:.3f}", f"{r.p99_ms:.3f}", f"{r.throughput:.1f}",
            f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb else "-",
            f"{b.p50_ms:.3f}" if b else "-", f"{report.speedup[str(r.batch)]:.2f}×" if b else "-",
        )
    console.print(table)
    _write_json(json_path, report.model_dump())


def engines(
    cache_dir: Annotated[Path | None, typer.Option("--cache", help="cache folder (default $KILN_HOME/cache/engines)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List cached engines and whether each can run on this machine."""
    from rich.table import Table

    from kiln.cli.console import console
    from kiln.config import get_settings
    from kiln.engine.artifact import EngineCache, compatibility_problems
    from kiln.engine.backends.base import get_backend

    cache = EngineCache(cache_dir or get_settings().engine_cache_dir)
    rows: list[dict[str, Any]] = []
    for entry in cache.entries():
        m = entry.manifest
        try:
            problems = compatibility_problems(m.compatibility, get_backend(m.backend).compatibility(m.device))
        except KilnError as exc:
            problems = [exc.message]
        rows.append({
            "path": str(entry.path), "name": m.name, "source": m.source.describe(), "backend": m.backend,
            "precision": m.precision.value, "device": m.device, "built_at": m.built_at,
            "runs_here": not problems, "problems": problems,
            "validated": None if m.validation is None else m.validation.passed,
        })
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"engines in {cache.root}")
    for col in ("name", "source", "backend", "precision", "device", "built", "runs here", "path"):
        table.add_column(col)
    for r in rows:
        ok = "[green]yes[/]" if r["runs_here"] else "[red]no[/]: " + "; ".join(r["problems"])
        table.add_row(r["name"], r["source"], r["backend"], r["precision"], r["device"], r["built_at"], ok, r["path"])
    console.print(table if rows else f"no engines in {cache.root}")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
    app.command("build")(build)
    app.command("validate")(validate_cmd)
    app.command("profile")(profile_cmd)
    app.command("engines")(engines)
