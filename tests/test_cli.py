"""One command shape: the same mistake gives the same exit code on every subcommand, shared
options mean the same thing everywhere, and errors become exit codes in one place."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest
from broker import free_port

from edge import config as cfg
from edge.choices import RUNTIMES
from edge.cli import build_parser, command_named
from edge.commands import COMMANDS, UsageError, execute
from edge.commands.options import pipeline_overrides, runtime_options
from edge.config import ModelSettings, settings
from edge.errors import EX_CONFIG, EX_INTERRUPTED, EX_SOFTWARE, EX_USAGE, ConfigError
from edge.runtime import RuntimeOptions
from edge.runtime.backends import BACKENDS

REPO = Path(__file__).resolve().parent.parent
IMAGE = str(REPO / "tests" / "data" / "shapes" / "scene_0.jpg")
SHAPES = str(REPO / "tests" / "data" / "shapes")


def edge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


# Arguments each subcommand needs to get past argparse, so that only the unknown flag is wrong.
VALID = {
    "infer": ["shapes-detector", IMAGE],
    "bench": ["shapes-detector"],
    "info": [],
    "models": ["repo"],
    "run": ["--source", "synthetic"],
    "check-config": ["x.toml"],
    "listen": [],
    "request": ["--model-on", "pi", IMAGE],
    "preview": ["--source", "synthetic"],
    "batch": [SHAPES, "--model", "shapes-detector", "-o", "out.jsonl"],
    "quantize": ["model.keras", "--calibration", "cal", "--out", "out"],
    "demo": [],
    "baseline": ["shapes-detector", IMAGE],
}


def test_every_subcommand_is_covered() -> None:
    """The usage test below knows every registered subcommand."""
    assert sorted(VALID) == sorted(c.name for c in COMMANDS)


@pytest.mark.parametrize("command", sorted(VALID))
def test_unknown_option_exits_2(command: str, tmp_path: Path) -> None:
    """An unknown option is a usage error, exit 2, on every subcommand, before anything runs."""
    proc = edge(command, *VALID[command], "--no-such-option", cwd=tmp_path)
    assert proc.returncode == EX_USAGE, proc.stderr
    assert "unrecognized arguments: --no-such-option" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "preview"])
def test_missing_source_exits_2_on_run_and_preview(command: str) -> None:
    """`edge run` and `edge preview` without --config or --source: the same usage error."""
    proc = edge(command, "--model", "shapes-detector")
    assert proc.returncode == EX_USAGE
    assert f"give --config FILE, or at least --source (e.g. `edge {command} --source" in (
        proc.stderr
    )


BAD_CONFIG = 'bogus = 1\n[[cameras]]\nsource = "synthetic"\n'


def config_errors(tmp: Path) -> dict[str, list[str]]:
    """For each subcommand, a command line with a model that does not exist or a bad
    configuration file."""
    bad = tmp / "bad.toml"
    bad.write_text(BAD_CONFIG)
    missing = str(tmp / "missing.tflite")
    quiet = ["--broker", f"127.0.0.1:{free_port()}", "--state-dir", str(tmp / "state")]
    return {
        "infer/model": ["infer", missing, IMAGE],
        "bench/model": ["bench", missing],
        "baseline/model": ["baseline", missing, IMAGE],
        "run/model": ["run", "--source", "synthetic", "--model", missing, *quiet],
        "run/config": ["run", "--config", str(bad)],
        "check-config/config": ["check-config", str(bad)],
        "batch/model": ["batch", SHAPES, "--model", missing, "-o", str(tmp / "o.jsonl")],
        "preview/model": [
            "preview",
            "--source",
            "synthetic",
            "--model",
            missing,
            "--snapshot",
            str(tmp / "s.jpg"),
        ],
        "preview/config": ["preview", "--config", str(bad)],
        "listen/config": ["listen", "--config", str(bad)],
    }


CASES = (
    "baseline/model",
    "batch/model",
    "bench/model",
    "check-config/config",
    "infer/model",
    "listen/config",
    "preview/config",
    "preview/model",
    "run/config",
    "run/model",
)


@pytest.mark.parametrize("case", CASES)
def test_model_or_config_error_exits_78(case: str, tmp_path: Path) -> None:
    """A model that does not exist or an invalid configuration file is exit 78 with one
    `edge: error:` message naming the problem, on every subcommand that takes one."""
    cases = config_errors(tmp_path)
    assert sorted(cases) == list(CASES)
    proc = edge(*cases[case])
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert "Traceback" not in proc.stderr
    if case.endswith("/model"):
        assert "edge: error: model file not found: " in proc.stderr and "missing.tflite" in (
            proc.stderr
        )
    else:
        assert "edge: error: invalid configuration in " in proc.stderr
        assert "bogus: unknown key" in proc.stderr


def test_tpu_option_and_the_deprecated_device_alias() -> None:
    """`--tpu` names the Edge TPU on infer and bench; `--device` still sets it there, with a
    deprecation warning naming --tpu; on `edge run`, --device is the MQTT device id."""
    parser = build_parser()
    for command in ("infer", "bench"):
        positional = VALID[command]
        args = parser.parse_args([command, *positional, "--tpu", "usb:0"])
        assert runtime_options(args, None).device == "usb:0"
        old = parser.parse_args([command, *positional, "--device", "pci:1"])
        assert runtime_options(old, None).device == "pci:1"
    run = parser.parse_args(["run", "--source", "synthetic", "--device", "pi1", "--tpu", "usb"])
    config = cfg.load(None, pipeline_overrides(run))
    assert config.device == "pi1" and config.model.edgetpu_device == "usb"

    proc = edge("bench", "shapes-detector", "--runs", "1", "--warmup", "0", "--device", "usb:0")
    assert proc.returncode == 0, proc.stderr
    assert "edge bench --device is deprecated" in proc.stderr and "--tpu usb:0" in proc.stderr
    plain = edge("bench", "shapes-detector", "--runs", "1", "--warmup", "0", "--tpu", "usb:0")
    assert plain.returncode == 0 and "deprecated" not in plain.stderr


def test_run_runtime_and_fallback_reach_the_configuration() -> None:
    """`edge run --runtime --fallback --tpu` override the file's [model] keys, and the pipeline
    loads its models with them."""
    args = build_parser().parse_args(
        ["run", "--source", "synthetic", "--runtime", "tensorflow", "--fallback", "cpu"]
    )
    config = cfg.load(None, pipeline_overrides(args))
    assert config.model.runtime == "tensorflow" and config.model.edgetpu_fallback == "cpu"
    options = RuntimeOptions.from_settings(config.model)
    assert options.backend == "tensorflow" and options.fallback == "cpu"
    unset = cfg.load(None, pipeline_overrides(build_parser().parse_args(["run", "--source", "x"])))
    assert RuntimeOptions.from_settings(unset.model).backend is None
    assert unset.model.edgetpu_fallback == "fail"


def test_runtime_names_agree() -> None:
    """The --runtime choices and the model.runtime key name exactly the runtime backends."""
    assert tuple(BACKENDS) == RUNTIMES
    (runtime,) = [s for s in settings(ModelSettings) if s.name == "runtime"]
    assert runtime.choices == RUNTIMES and runtime.optional
    parser = build_parser()
    for name in RUNTIMES:
        assert parser.parse_args(["run", "--source", "x", "--runtime", name]).runtime == name


def test_log_level_help_tells_the_run_default() -> None:
    """Top-level help says `edge run` logs at its configuration's level (info), not warning."""
    text = " ".join(build_parser().format_help().split())
    assert "default: warning; `edge run` uses its configuration's log_level, info" in text


def test_run_logs_at_info_and_one_shot_commands_at_warning(tmp_path: Path) -> None:
    """Without --log-level, `edge run` logs INFO lines and `edge infer` none; --log-level
    warning quiets `edge run`."""
    # A short run against a port where no broker listens: it starts, logs, and stops cleanly.
    ok = ["run", "--source", "synthetic", "--duration", "0.5", "--state-dir", str(tmp_path)]
    ok += ["--broker", f"127.0.0.1:{free_port()}"]
    run = edge(*ok)
    assert " INFO " in run.stderr and run.returncode == 0, run.stderr
    cases = config_errors(tmp_path)
    quiet = edge("--log-level", "warning", *ok)
    assert " INFO " not in quiet.stderr and quiet.returncode == 0, quiet.stderr
    failed = edge("--log-level", "warning", *cases["run/model"])
    assert " INFO " not in failed.stderr and failed.returncode == EX_CONFIG
    infer = edge("infer", "shapes-detector", IMAGE)
    assert infer.returncode == 0 and infer.stderr == ""


def test_execute_maps_every_error_to_its_exit_code(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """execute(): EdgeError → its code and one line, UsageError 2, Ctrl-C 130, a bug 1 with
    its traceback logged."""

    def raising(exc: BaseException) -> int:
        raise exc

    args = argparse.Namespace()
    assert execute(lambda a: raising(ConfigError("x: bad")), args) == EX_CONFIG
    assert capsys.readouterr().err == "edge: error: invalid configuration: x: bad\n"
    assert execute(lambda a: raising(UsageError("give FILE")), args, prog="edge q") == EX_USAGE
    assert capsys.readouterr().err == "edge q: error: give FILE\n"
    assert execute(lambda a: raising(KeyboardInterrupt()), args) == EX_INTERRUPTED
    assert execute(lambda a: raising(RuntimeError("boom")), args) == EX_SOFTWARE
    assert "unexpected error" in caplog.text and "RuntimeError: boom" in caplog.text


def test_no_module_imports_the_cli() -> None:
    """Only the entry points (edge/cli.py, edge/__main__.py) import edge.cli."""
    offenders = []
    for path in sorted((REPO / "edge").rglob("*.py")):
        if path.name in ("cli.py", "__main__.py") and path.parent.name == "edge":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if "edge.cli" in names:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["run", "--config", "x.toml"], "run"),
        (["--log-level", "debug", "info"], "info"),
        (["--log-level=debug", "bench", "m"], "bench"),
        (["--log-level", "run"], None),  # "run" is the level's (bad) value, not the command
        (["runn"], None),
        (["--version"], None),
        (["-h", "run"], None),
        ([], None),
    ],
)
def test_the_parser_built_for_a_named_command_holds_it_alone(
    argv: list[str], named: str | None
) -> None:
    """main builds only the named command's sub-parser; anything else gets the whole parser."""
    assert command_named(argv) == named
    (sub,) = (
        a
        for a in build_parser(command_named(argv))._actions
        if isinstance(a, argparse._SubParsersAction)
    )
    assert list(sub.choices) == ([named] if named else [c.name for c in COMMANDS])


def test_a_misspelt_command_is_answered_with_every_command_name() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "runn"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and all(c.name in proc.stderr for c in COMMANDS), proc.stderr
