"""The ``kiln`` command: a thin layer that parses arguments and calls the layers.

Each command group lives in its own module and registers itself on the root app; heavy
libraries (torch, onnxruntime) are imported inside the commands, so ``kiln --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from kiln.errors import KilnError

app = typer.Typer(
    name="kiln",
    help="Build, prove and serve fast inference engines; run the authentication and packaging apps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that add commands to ``app``; each defines ``register(app)``.
COMMAND_MODULES = (
    "kiln.cli.engine",
    "kiln.cli.serve",
    "kiln.cli.packaging",
    "kiln.cli.auth",
    "kiln.cli.worker",
    "kiln.cli.demo",
    "kiln.cli.keys",
    "kiln.cli.store",
)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


def main() -> None:
    """Entry point: run the app and print user-facing errors without a traceback."""
    try:
        # standalone_mode=False: click returns a command's exit code (typer.Exit) instead of exiting
        code = app(standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except KilnError as exc:
        from kiln.cli.console import print_error

        print_error(exc)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", None)
        if code is None:
            code = getattr(exc, "code", 0)
        sys.exit(code or 0)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in standalone_mode=False
        if isinstance(exc, _click_exceptions()):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def _click_exceptions() -> tuple[type[Any], ...]:
    """Click's usage-error classes: click's own, and those of the click that newer typer releases bundle
    (a bad option value, such as --seed abc, raises the latter)."""
    import click

    classes: list[type[Any]] = [click.exceptions.ClickException]
    try:
        from typer._click import exceptions as bundled  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        classes.append(bundled.ClickException)
    return tuple(classes)
