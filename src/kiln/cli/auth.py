"""``kiln auth``: the authentication app's data, training, evaluation and engine commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.apps.authenticity.calibration import Pooling

auth_app = typer.Typer(
    name="auth",
    help="Authentication app: synthetic data, training, evaluation, engines, references.",
    no_args_is_help=True,
)

POOLING_HELP = ("how a case's photos are pooled: top_two (largest and second-largest counterfeit log-odds) "
                "or soft_max (log-sum-exp of all)")
VIEW_SCALING_HELP = "rescale each view's log-odds by its own logistic fit on the validation photos"
MIN_CONFIDENCE_HELP = "no verdict for a case whose own calibrated probability is below this (at most the target precision)"


def _check_thresholds(target_precision: float, min_confidence: float) -> None:
    if not 0.5 <= target_precision < 1.0:
        raise KilnError(f"--target-precision {target_precision} must be in [0.5, 1)")
    if not 0.5 < min_confidence <= target_precision:
        raise KilnError(f"--min-confidence {min_confidence} must be above 0.5 and at most --target-precision ({target_precision})")


def _pooling(value: str) -> Pooling:
    from kiln.apps.authenticity.calibration import POOLINGS

    if value not in POOLINGS:
        raise KilnError(f"--pooling {value!r} is not one of {', '.join(POOLINGS)}")
    return cast("Pooling", value)


@auth_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="folder to create (must be empty or absent)")],
    cases: Annotated[int, typer.Option("--cases", help="number of cases (items), each with one photo per view")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="random seed; the same seed gives the same data")] = 0,
    difficulty: Annotated[str, typer.Option(help="easy | medium | hard | mixed, or a list such as medium,hard")] = "mixed",
    size: Annotated[int, typer.Option(help="photo width and height in pixels")] = 320,
    counterfeit_fraction: Annotated[float, typer.Option(help="share of counterfeit cases")] = 0.5,
    workers: Annotated[int | None, typer.Option(help="processes (default: all cores)")] = None,
    twins: Annotated[bool, typer.Option("--twins/--no-twins", help="also write each flawed photo without its flaw (training aid)")] = True,
) -> None:
    """Render labelled-synthetic detail photos in the dataset layout (demo and test data)."""
    from kiln.apps.authenticity.synth import SynthSpec, generate_dataset
    from kiln.apps.authenticity.synth.defects import parse_difficulty
    from kiln.cli.console import console
    from kiln.progress import RichReporter

    if not 0.0 <= counterfeit_fraction <= 1.0:
        raise KilnError(f"--counterfeit-fraction {counterfeit_fraction} is not between 0 and 1")
    spec = SynthSpec(seed=seed, size=size, levels=parse_difficulty(difficulty), counterfeit_fraction=counterfeit_fraction,
                     twins=twins)
    summary = generate_dataset(out, cases, spec, workers=workers, reporter=RichReporter())
    console.print(
        f"[green]wrote[/] {summary.cases} synthetic cases ({summary.photos} photos) to {summary.out} "
        f"in {summary.seconds:.1f}s: {summary.labels}; counterfeit difficulty {summary.difficulties}"
    )
    console.print("[yellow]synthetic data[/]: for trying and testing kiln; see SYNTHETIC.txt")


@auth_app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option("--data", help="dataset folder: BRAND/MODEL/VIEW/{authentic,counterfeit}/")],
    out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint file to write (.pt)")] = Path("auth.pt"),
    backbone: Annotated[str, typer.Option(help="timm backbone (random init unless --pretrained)")] = "resnet10t",
    width: Annotated[float, typer.Option(help="channel width multiplier for ResNet backbones")] = 0.5,
    epochs: Annotated[int, typer.Option(help="passes over the training photos")] = 10,
    time_budget: Annotated[float | None, typer.Option(
        help="seconds of training: after the first epoch, keep as many of --epochs as fit (the schedule is re-planned)"
    )] = None,
    image_size: Annotated[int, typer.Option(help="model input size in pixels (square)")] = 160,
    batch_size: Annotated[int, typer.Option(help="photos per training step")] = 48,
    lr: Annotated[float, typer.Option(help="peak learning rate (one-cycle schedule)")] = 3e-3,
    val_fraction: Annotated[float, typer.Option(help="share of cases held out for validation and calibration")] = 0.2,
    target_precision: Annotated[float, typer.Option(help="precision the abstention thresholds aim for")] = 0.99,
    min_confidence: Annotated[float, typer.Option(help=MIN_CONFIDENCE_HELP)] = 0.97,
    min_authentic_views: Annotated[int, typer.Option(help="usable photos an authentic verdict needs")] = 3,
    pretrained: Annotated[Path | None, typer.Option(help="local timm state_dict to start from (nothing is downloaded)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: all cores)")] = None,
    seed: Annotated[int, typer.Option(help="seed for the split, initialisation and augmentation")] = 0,
    device: Annotated[str, typer.Option(help="torch device for the network: cpu, or cuda to train on a GPU")] = "cpu",
    design_heads: Annotated[bool, typer.Option(
        help="also one classifier per brand/model (cases of a known design are judged by its house style)"
    )] = False,
    amp: Annotated[bool, typer.Option(help="bf16 autocast on a CUDA device (the CPU always trains in fp32)")] = True,
    pooling: Annotated[str, typer.Option(help=POOLING_HELP)] = "top_two",
    view_scaling: Annotated[bool, typer.Option(help=VIEW_SCALING_HELP)] = True,
) -> None:
    """Fine-tune the per-view model and calibrate verdicts on held-out cases."""
    import json

    from kiln.apps.authenticity.train import EpochStats, TrainConfig, describe, train
    from kiln.cli.console import console
    from kiln.progress import RichReporter

    if pretrained is not None and not pretrained.is_file():
        raise KilnError(f"--pretrained {pretrained} is not a file")
    _check_thresholds(target_precision, min_confidence)
    config = TrainConfig(
        backbone=backbone, width=width, epochs=epochs, time_budget_s=time_budget, image_size=image_size, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, target_precision=target_precision, min_confidence=min_confidence,
        min_authentic_views=min_authentic_views,
        pretrained=pretrained, threads=threads, seed=seed, device=device, design_heads=design_heads, amp=amp,
        pooling=_pooling(pooling), view_scaling=view_scaling,
    )

    def show(stats: EpochStats) -> None:
        console.print(
            f"epoch {stats.epoch:>3}: loss {stats.loss:.4f}  val loss {stats.val_loss:.4f}  "
            f"val photo accuracy {stats.val_photo_accuracy:.2%}  ({stats.seconds:.0f}s, {stats.images_per_s:.0f} photos/s)"
        )

    result = train(data, out, config, reporter=RichReporter(), on_epoch=show)
    summary = describe(result)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    v = result.calibration.validation
    t = result.calibration.thresholds
    console.print(
        f"[green]checkpoint[/] {out} in {result.seconds:.0f}s; validation: {v['cases']} cases, coverage {v['coverage']:.1%}, "
        f"accuracy on covered {v['accuracy_covered']:.2%}; temperature {result.calibration.temperature:.2f}, "
        f"thresholds counterfeit ≥ {t.counterfeit:.3f}, authentic ≤ {t.authentic:.3f}"
    )
    if result.calibration.trained_on.get("synthetic"):
        console.print("[yellow]trained on synthetic data[/]: a demo model, not for real items")


@auth_app.command("recalibrate")
def recalibrate_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="checkpoint written by `kiln auth train`")],
    data: Annotated[Path, typer.Option("--data", help="the dataset it was trained on (same split: --val-fraction, --seed)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="checkpoint to write (default: overwrite --checkpoint)")] = None,
    val_fraction: Annotated[float, typer.Option(help="share of cases held out for validation, as in training")] = 0.2,
    seed: Annotated[int, typer.Option(help="the split's seed, as in training")] = 0,
    target_precision: Annotated[float, typer.Option(help="precision the abstention thresholds aim for")] = 0.99,
    min_confidence: Annotated[float, typer.Option(help=MIN_CONFIDENCE_HELP)] = 0.97,
    min_authentic_views: Annotated[int, typer.Option(help="usable photos an authentic verdict needs")] = 3,
    pooling: Annotated[str, typer.Option(help=POOLING_HELP)] = "top_two",
    view_scaling: Annotated[bool, typer.Option(help=VIEW_SCALING_HELP)] = True,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: all cores)")] = None,
) -> None:
    """Refit a trained checkpoint's calibration (temperature, view scales, pooling, thresholds, gate
    profiles) on its validation split, keeping the weights. Engines built from it afterwards carry it."""
    from kiln.apps.authenticity.train import TrainConfig, recalibrate
    from kiln.cli.console import console
    from kiln.progress import RichReporter

    if not checkpoint.is_file():
        raise KilnError(f"--checkpoint {checkpoint} is not a file")
    _check_thresholds(target_precision, min_confidence)
    config = TrainConfig(val_fraction=val_fraction, seed=seed, target_precision=target_precision, min_confidence=min_confidence,
                         min_authentic_views=min_authentic_views, threads=threads, pooling=_pooling(pooling),
                         view_scaling=view_scaling)
    calibration = recalibrate(checkpoint, data, config, out, reporter=RichReporter())
    v = calibration.validation
    console.print(
        f"[green]calibration[/] {out or checkpoint}: {calibration.pooling} pooling, {len(calibration.view_scales)} view scales; "
        f"validation: {v['cases']} cases, coverage {v['coverage']:.1%}, accuracy on covered {v['accuracy_covered']:.2%}"
    )


@auth_app.command("build")
def build_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="checkpoint written by `kiln auth train`")],
    data: Annotated[Path, typer.Option("--data", help="the dataset it was trained on (calibration and validation photos)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="engine directory to write")],
    precision: Annotated[str, typer.Option(help="int8 | fp32 | fp16 (GPU)")] = "int8",
    backend: Annotated[str, typer.Option(help="onnxruntime | torch")] = "onnxruntime",
    batch: Annotated[str, typer.Option(help="batch profile MIN:OPT:MAX (a case is up to 6 photos)")] = "1:6:32",
    max_drop: Annotated[float, typer.Option(help="largest accepted per-photo accuracy drop vs FP32, in points")] = 1.0,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="skip the accuracy gate")] = False,
) -> None:
    """Build the authentication engine (INT8 by default) behind kiln's accuracy gate."""
    import time

    from kiln.apps.authenticity.engine import build_auth_engine
    from kiln.cli.console import console
    from kiln.engine.spec import BatchProfile, Precision
    from kiln.progress import RichReporter

    try:
        prec = Precision(precision)
    except ValueError as exc:
        raise KilnError(f"--precision {precision!r} is not one of fp32, fp16, bf16, int8") from exc
    if not checkpoint.is_file():
        raise KilnError(f"--checkpoint {checkpoint} is not a file")
    started = time.perf_counter()
    outcome = build_auth_engine(checkpoint, data, out, precision=prec, backend=backend, batch=BatchProfile.parse(batch),
                                max_drop=max_drop, validate=not no_validate, reporter=RichReporter())
    for note in outcome.notes:
        console.print(f"[yellow]accuracy gate:[/] {note}")
    m = outcome.manifest
    how = "reused from cache" if outcome.cached else f"built in {time.perf_counter() - started:.0f}s"
    console.print(f"[green]engine[/] {out} ({m.backend} {m.precision.value} on {m.device}, {how})")
    if m.validation is not None:
        v = m.validation
        console.print(f"  accuracy gate: photo accuracy {v.engine_top1:.2f}% vs FP32 {v.reference_top1:.2f}% "
                      f"(drop {v.drop_points:.2f} ≤ {v.max_drop}), agreement {v.top1_agreement:.2f}%")


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


@auth_app.command("evaluate")
def evaluate_cmd(
    data: Annotated[Path, typer.Option("--data", help="held-out dataset (e.g. synthesised with an unseen seed)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for metrics.json, cases.csv and the plots")] = Path("auth-eval"),
    checkpoint: Annotated[Path | None, typer.Option(help="evaluate the FP32 checkpoint (PyTorch)")] = None,
    engine: Annotated[Path | None, typer.Option(help="evaluate an engine directory")] = None,
    threads: Annotated[int | None, typer.Option(help="threads for decoding (with --decoder pillow) and PyTorch")] = None,
    decoder: Annotated[str, typer.Option(
        help="how the photos are decoded: pillow (the server's CPU path, KILN_DECODE_DEVICE=auto|cpu), nvjpeg (its GPU "
             "path, KILN_DECODE_DEVICE=cuda) or torchvision (the GPU path's steps on the CPU, with libjpeg-turbo "
             "instead of nvJPEG)")] = "pillow",
) -> None:
    """Case accuracy at the calibrated coverage, ROC-AUC, confusion matrix and a coverage-vs-accuracy plot."""
    import json
    import os

    from kiln.apps.authenticity.evaluate import DECODERS, decoder_device, evaluate, write_outputs
    from kiln.apps.authenticity.predict import CheckpointPredictor, EnginePredictor, Predictor
    from kiln.cli.console import console
    from kiln.progress import RichReporter

    if checkpoint is None and engine is None:
        raise KilnError("nothing to evaluate", hint="pass --checkpoint auth.pt and/or --engine ENGINE_DIR")
    if decoder not in DECODERS:
        raise KilnError(f"--decoder {decoder!r} is not one of {', '.join(DECODERS)}")
    decoder_device(decoder)  # fails here, before the data and the predictors load, when this machine cannot
    threads = threads or os.cpu_count() or 1
    targets: list[tuple[str, Predictor]] = []
    if checkpoint is not None:
        targets.append(("fp32", CheckpointPredictor(checkpoint, threads=threads)))
    if engine is not None:
        targets.append(("engine", EnginePredictor(engine)))
    summary: dict[str, object] = {}
    for label, predictor in targets:
        report = evaluate(predictor, data, threads=threads, reporter=RichReporter(), decoder=decoder)
        folder = out / label if len(targets) > 1 else out
        write_outputs(report, folder, title=f"{predictor.name}")
        summary[label] = report.summary()
        console.print(
            f"[bold]{predictor.name}[/]: {report.cases} cases, coverage {report.coverage:.1%}, accuracy on decided cases "
            f"{report.accuracy_covered:.2%} (no abstention {report.accuracy_no_abstention:.2%}), ROC-AUC {report.roc_auc}, "
            f"rejected photos {report.rejected_photo_rate:.1%}; written to {folder}"
        )
        if report.cpu_decoded_photos:
            console.print(f"[yellow]{report.cpu_decoded_photos} photos were decoded by Pillow, not by {decoder}[/] "
                          "(PNG, WebP, CMYK, or a batch it refused), as the server would")
        for level, figures in report.by_difficulty.items():
            console.print(f"  {level}: coverage {figures['coverage']:.1%}, accuracy {figures['accuracy_covered']:.2%}, "
                          f"counterfeit recall {figures['counterfeit_recall']:.2%}")
        for view, row in report.by_view.items():
            if row["flawed"]:
                console.print(f"  photos of {view}: flawed caught {_percent(row['flawed_recall'])}, clean flagged "
                              f"{_percent(row['clean_false_alarms'])}, ROC-AUC {row['roc_auc'] if row['roc_auc'] is not None else 'n/a'}, rejected {row['rejected']}")
        for defect, row in report.by_defect.items():
            console.print(f"  defect {defect}: caught {_percent(row['recall'])} of {row['photos']} photos "
                          f"(median evidence {row['median_probability'] if row['median_probability'] is not None else 'n/a'})")
    if len(targets) == 2:
        fp32, eng = summary["fp32"], summary["engine"]
        assert isinstance(fp32, dict) and isinstance(eng, dict)
        drop = (fp32["accuracy_no_abstention"] - eng["accuracy_no_abstention"]) * 100
        console.print(f"engine vs FP32: case accuracy drop {drop:.2f} points (no abstention)")
        summary["drop_points"] = round(drop, 3)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


@auth_app.command("bulk")
def bulk_cmd(
    source: Annotated[Path, typer.Argument(help="CSV (case_id,brand,model,view,path) or folder BRAND/MODEL/VIEW/LABEL/*.jpg")],
    broker: Annotated[str, typer.Option("--broker", envvar="KILN_BROKER", help="amqp:// URL of the broker the workers consume")],
    queue_prefix: Annotated[str, typer.Option("--queue-prefix", help="name prefix of the broker queues")] = "kiln",
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for all results")] = 3600.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary (and job ids) as JSON")] = None,
) -> None:
    """Submit a catalogue of cases to the workers (bulk priority) and summarise the verdicts."""
    import asyncio
    import json
    from dataclasses import asdict

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kiln.cli.console import console
    from kiln.scale.broker import check_url
    from kiln.scale.bulk import BulkProgress, read_catalogue, run_bulk

    check_url(broker)
    if timeout <= 0:
        raise KilnError("--timeout must be positive")
    cases = read_catalogue(source)
    with Progress(TextColumn("[bold]bulk"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("cases", total=len(cases), detail="")

        def show(p: BulkProgress) -> None:
            rate = p.done / p.elapsed_s if p.elapsed_s > 0 else 0.0
            bar.update(task, completed=p.finished, detail=f"published {p.published}  failed {p.failed + p.rejected}  {rate:.1f} cases/s")

        summary = asyncio.run(run_bulk(cases, broker, queue_prefix=queue_prefix, timeout_s=timeout, on_progress=show))
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(summary.verdicts.items())) or "none"
    console.print(f"{summary.done}/{summary.total} cases done in {summary.elapsed_s:.1f} s ({summary.cases_per_s:.1f} cases/s); "
                  f"verdicts: {verdicts}")
    if summary.failed or summary.rejected or summary.unfinished:
        console.print(f"[red]{summary.failed} failed, {summary.rejected} rejected before submitting, "
                      f"{summary.unfinished} without a result[/]")
        for failure in summary.failures[:10]:
            console.print(f"  {failure['case']}: {failure['error']}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(asdict(summary) | {"cases_per_s": summary.cases_per_s}, indent=2) + "\n")
    if summary.done < summary.total:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(auth_app, name="auth")
