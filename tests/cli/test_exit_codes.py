"""The `kiln` entry point turns command outcomes into process exit codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import typer

from kiln.cli import app, main


@pytest.fixture
def command_exiting_with() -> Iterator[typer.Typer]:
    name = "test-exit-with"

    @app.command(name, hidden=True)
    def exit_with(code: int) -> None:
        raise typer.Exit(code)

    yield app
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != name]


@pytest.mark.parametrize("code", [0, 1, 3])
def test_typer_exit_code_reaches_the_process(command_exiting_with: typer.Typer, monkeypatch: pytest.MonkeyPatch,
                                             code: int) -> None:
    monkeypatch.setattr(sys, "argv", ["kiln", "test-exit-with", str(code)])
    if code == 0:
        main()  # returns normally: exit status 0
        return
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == code


def test_user_errors_exit_2_without_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["kiln", "serve", "--repo", "/nonexistent", "--http-port", "70000"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "70000" in out.out + out.err


@pytest.mark.parametrize("argv", [["auth", "train", "--data", "/tmp", "--seed", "abc"],
                                  ["auth", "train", "--data", "/tmp", "--min-confidence", "high"]])
def test_a_value_of_the_wrong_type_is_a_usage_error(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["kiln", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "Invalid value for" in out.out + out.err


def test_fuse_conv_outside_the_torch_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: object,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["kiln", "build", "timm:resnet18", "-o", f"{tmp_path}/e", "--fuse-conv"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "--fuse-conv is a torch backend option" in out.out + out.err
