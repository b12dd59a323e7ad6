"""The delegate chain as it is configured: ``[model] delegate`` as one name or a list, the
chain's keys and its external delegate library, ``--delegate a,b`` on every command that runs a
model, and what they make of RuntimeOptions and the model's loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from broker import wait_for
from native.chains import invoke_threads

from edge import config as cfg
from edge.cli import build_parser
from edge.commands.options import pipeline_overrides, runtime_options
from edge.config import validate
from edge.engine import Engine
from edge.errors import EX_USAGE, ConfigError, ModelError
from edge.runtime import Interpreter, RuntimeOptions, load_model
from edge.runtime.chain import chain
from edge.runtime.failover import FailoverInterpreter

REPO = Path(__file__).resolve().parent.parent


def model(**keys: Any) -> dict[str, Any]:
    return {"model": keys, "cameras": [{"source": "synthetic"}]}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(data)
    return list(info.value.problems)


def test_delegate_is_a_string_or_a_list() -> None:
    """A single name is read as a chain of one; a list keeps its order; the default is
    XNNPACK alone, and RuntimeOptions takes the first as its delegate and the rest as its
    chain, with the chain's timeout and re-probe period."""
    assert validate(model()).model.delegate == ("xnnpack",)
    assert validate(model(delegate="edgetpu")).model.delegate == ("edgetpu",)
    m = validate(model(delegate=["edgetpu", "xnnpack"], invoke_timeout_ms=500, reprobe_s=5)).model
    assert m.delegate == ("edgetpu", "xnnpack")
    opts = RuntimeOptions.from_settings(m)
    assert (opts.delegate, opts.chain, opts.delegates) == (
        "edgetpu",
        ("xnnpack",),
        ("edgetpu", "xnnpack"),
    )
    assert (opts.invoke_timeout_ms, opts.reprobe_s) == (500.0, 5.0)
    assert RuntimeOptions.from_settings(validate(model()).model) == RuntimeOptions()


def test_bad_delegate_chains_are_refused_with_their_path() -> None:
    """An unknown name, a repeated one, an empty list, a non-string and negative chain timings
    are each a problem naming the key."""
    assert problems(model(delegate=["edgetpu", "coral"])) == [
        "model.delegate: 'coral' is not one of 'xnnpack', 'cpu', 'edgetpu', 'external'"
    ]
    assert problems(model(delegate=["xnnpack", "edgetpu", "xnnpack"])) == [
        "model.delegate: names xnnpack more than once (got ('xnnpack', 'edgetpu', 'xnnpack'))"
    ]
    assert problems(model(delegate=[])) == ["model.delegate: name at least one delegate (got ())"]
    assert problems(model(delegate=3)) == [
        "model.delegate: must be a string or a list of strings, got int 3"
    ]
    assert problems(model(delegate=["edgetpu", 1])) == ["model.delegate: must be a list of strings"]
    assert problems(model(invoke_timeout_ms=-1, reprobe_s=-0.5)) == [
        "model.invoke_timeout_ms: must be at least 0, got -1.0",
        "model.reprobe_s: must be at least 0, got -0.5",
    ]


def test_external_and_delegate_library_go_together(tmp_path: Path) -> None:
    """``external`` needs delegate_library and a library needs ``external``; its options are
    "key=value" strings that become RuntimeOptions.library_options; in the chain only the
    external entry loads the library."""
    lib = str(tmp_path / "libnpu.so")
    assert problems(model(delegate=["external", "xnnpack"])) == [
        "model.delegate: external needs model.delegate_library (the delegate's shared library); "
        "set it or leave external out"
    ]
    assert problems(model(delegate_library=lib)) == [
        "model.delegate_library: set, but model.delegate does not name external, so it would "
        'never be used; add "external" to model.delegate or leave the key out'
    ]
    assert problems(
        model(delegate="external", delegate_library=lib, delegate_library_options=["x"])
    ) == ["model.delegate_library_options: each must be \"key=value\": 'x' (got ('x',))"]
    m = validate(
        model(
            delegate=["external", "xnnpack"],
            delegate_library=lib,
            delegate_library_options=["control = /run/c", "claim=all"],
        )
    ).model
    opts = RuntimeOptions.from_settings(m)
    assert opts.library == lib
    assert opts.library_options == (("control", "/run/c"), ("claim", "all"))
    ext, xnn = chain(opts.delegates, opts)
    assert (ext.options.library, ext.options.library_options) == (lib, opts.library_options)
    assert (xnn.options.library, xnn.options.library_options, xnn.options.chain) == ("", (), ())


def test_external_without_a_library_is_a_model_error() -> None:
    """RuntimeOptions naming external without a library fail to load with what to set."""
    with pytest.raises(ModelError, match=r"delegate external needs .*delegate_library"):
        Engine.load("shapes-classifier", RuntimeOptions(delegate="external"))


def test_load_model_wraps_a_chain_only() -> None:
    """One delegate loads a plain Interpreter; a chain a FailoverInterpreter running the first
    entry that loads; a chain for an ONNX model is refused as meaningless."""
    spec = Engine.load("shapes-classifier").spec
    plain = load_model(spec.path, RuntimeOptions(threads=1))
    assert isinstance(plain, Interpreter)
    wrapped = load_model(
        spec.path, RuntimeOptions(threads=1, delegate="edgetpu", device="usb:9", chain=("cpu",))
    )
    try:
        assert isinstance(wrapped, FailoverInterpreter)
        assert wrapped.status.active == "cpu" and wrapped.status.chain == ("edgetpu", "cpu")
        assert "running on cpu, not edgetpu" in wrapped.info.degraded
    finally:
        wrapped.close()
    with pytest.raises(ModelError, match=r"a delegate chain .* applies to \.tflite models"):
        Engine.load("shapes-detector-onnx", RuntimeOptions(chain=("cpu",)))


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "m"],
        ["infer", "m", "i.jpg"],
        ["run", "--source", "synthetic"],
        ["preview", "--source", "synthetic"],
    ],
)
def test_delegate_flag_takes_a_comma_separated_chain(argv: list[str]) -> None:
    """``--delegate edgetpu,xnnpack`` is a chain in order on bench, infer, run and preview:
    RuntimeOptions for the one-shot commands, the dotted model.delegate for the pipelines."""
    args = build_parser().parse_args([*argv, "--delegate", "edgetpu, xnnpack"])
    assert args.delegate == ("edgetpu", "xnnpack")
    if argv[0] in ("run", "preview"):
        config = cfg.load(None, pipeline_overrides(args))
        assert config.model.delegate == ("edgetpu", "xnnpack")
    else:
        opts = runtime_options(args, None)
        assert (opts.delegate, opts.chain) == ("edgetpu", ("xnnpack",))


def test_batch_takes_a_chain_of_cpu_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    """``edge batch --delegate xnnpack,cpu`` fails over to the builtin kernels; the Edge TPU
    is not offered there (exit 2)."""
    base = ["batch", "in", "--model", "m", "-o", "out.jsonl", "--delegate"]
    assert build_parser().parse_args([*base, "xnnpack,cpu"]).delegate == ("xnnpack", "cpu")
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*base, "edgetpu,xnnpack"])
    assert info.value.code == EX_USAGE
    assert "unknown delegate 'edgetpu': use one of xnnpack, cpu" in capsys.readouterr().err


def edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("edgetpu,coral", "unknown delegate 'coral': use one of xnnpack, cpu, edgetpu"),
        ("xnnpack,xnnpack", "xnnpack appears more than once in the chain 'xnnpack,xnnpack'"),
        ("external", "unknown delegate 'external'"),  # it needs a configuration's library
    ],
)
def test_bad_delegate_flag_is_a_usage_error(value: str, message: str) -> None:
    """An unknown or repeated name in ``--delegate`` is exit 2 with argparse's usage line and
    what is wrong, before anything is loaded."""
    proc = edge("infer", "shapes-classifier", "x.jpg", "--delegate", value)
    assert proc.returncode == EX_USAGE, proc.stderr
    assert "usage: edge infer" in proc.stderr and message in proc.stderr


def test_closing_an_engine_on_a_chain_ends_its_threads() -> None:
    """Engine.close (what the daemon does to a model a reload drops, and at shutdown) ends the
    chain's invoke thread and its re-probing."""
    engine = Engine.load(
        "shapes-classifier",
        RuntimeOptions(
            threads=1, delegate="edgetpu", device="usb:9", chain=("cpu",), reprobe_s=0.05
        ),
    )
    names = ("invoke-shapes-classifier-cpu", "reprobe-shapes-classifier")
    assert [invoke_threads(n) for n in names] == [1, 1]
    engine.close()
    assert wait_for(lambda: [invoke_threads(n) for n in names] == [0, 0], 5)
