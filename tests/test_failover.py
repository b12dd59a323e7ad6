"""The delegate failover chain, driven by a real native delegate that fails or stalls on command
(tests/native/failing_delegate.c, compiled here), against XNNPACK's own results."""

from __future__ import annotations

import ctypes.util
import statistics
import time
from pathlib import Path

import pytest
from broker import wait_for
from native.chains import (
    BENCH,
    CLASSIFIER,
    DETECTOR,
    ONE_THREAD,
    answers,
    chain_of,
    inputs,
    invoke_threads,
    native,
    open_chain,
    same,
)

from edge.errors import EX_CONFIG, DelegateError, ModelError
from edge.runtime import Interpreter, RuntimeOptions, failover, load
from edge.runtime.chain import Link, chain
from edge.runtime.failover import FailoverInterpreter

# -- the native delegate itself ------------------------------------------------------------


@pytest.mark.parametrize("path", [CLASSIFIER, DETECTOR, BENCH], ids=lambda p: p.parent.name)
def test_healthy_native_delegate_runs_nodes_and_matches_xnnpack(
    path: Path, library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """Healthy, the native delegate takes nodes of each bundled model (more delegate partitions
    than XNNPACK alone) and every output equals XNNPACK's own, bit for bit."""
    interp = open_chain(opened, chain_of(library, control), path)
    bare = load(path, ONE_THREAD)
    assert interp.status.active == "native"
    assert interp.info.delegate_partitions > bare.info.delegate_partitions
    assert interp.info.degraded == ""
    for values in inputs(interp, 3):
        assert same(answers(interp, values), answers(bare, values))
    assert interp.status.switches == 0 and interp.status.last_switch is None


# -- switching at run time -----------------------------------------------------------------


def test_failure_on_command_switches_to_xnnpack_and_answers_every_input(
    library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """A native invoke that fails mid-run switches to XNNPACK, which answers that same input:
    every input gets XNNPACK's result and the switch is reported with its reason."""
    interp = open_chain(opened, chain_of(library, control))
    bare = load(CLASSIFIER, ONE_THREAD)
    for i, values in enumerate(inputs(interp, 10)):
        if i == 4:
            control.write_text("fail")
        assert same(answers(interp, values), answers(bare, values)), i
    status = interp.status
    assert status.active == "xnnpack" and status.chain == ("native", "xnnpack")
    assert status.switches == 1
    switch = status.last_switch
    assert switch is not None
    assert (switch.source, switch.target) == ("native", "xnnpack")
    assert "failing on command" in switch.reason
    assert 0 <= switch.detect_ms < 1000 and 0 < switch.switch_ms < 5000
    assert "failing on command" in status.reasons["native"]
    assert interp.info.degraded.startswith("running on xnnpack, not native: invoke failed")


def test_stalled_invoke_switches_within_the_timeout(
    library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """An invoke that hangs in native code is given up after invoke_timeout_ms: the same input
    is answered by XNNPACK soon after, and the abandoned invoke thread ends once the stall does."""
    timeout_ms = 250.0
    interp = open_chain(opened, chain_of(library, control), invoke_timeout_ms=timeout_ms)
    bare = load(CLASSIFIER, ONE_THREAD)
    values = inputs(interp, 3)
    assert same(answers(interp, values[0]), answers(bare, values[0]))
    assert invoke_threads("invoke-shapes-classifier-native") == 1
    control.write_text("stall")
    t0 = time.perf_counter()
    got = answers(interp, values[1])
    took_ms = (time.perf_counter() - t0) * 1000
    assert same(got, answers(bare, values[1]))
    assert timeout_ms <= took_ms < timeout_ms + 1500  # the margin is for a loaded machine
    switch = interp.status.last_switch
    assert switch is not None and switch.target == "xnnpack"
    assert "timed out after 250 ms" in switch.reason
    assert timeout_ms <= switch.detect_ms < timeout_ms + 1000
    assert same(answers(interp, values[2]), answers(bare, values[2]))
    assert invoke_threads("invoke-shapes-classifier-native") == 1  # still stuck in the native call
    control.write_text("ok")
    assert wait_for(lambda: invoke_threads("invoke-shapes-classifier-native") == 0, 5)


def test_without_a_watchdog_a_raise_still_fails_over_on_the_calling_thread(
    library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """invoke_timeout_ms = 0 runs invokes on the caller's thread (no invoke threads at all); an
    invoke that raises still switches and the input is still answered."""
    interp = open_chain(opened, chain_of(library, control), invoke_timeout_ms=0)
    bare = load(CLASSIFIER, ONE_THREAD)
    assert invoke_threads("invoke-shapes-classifier-native") == 0
    control.write_text("fail")
    values = inputs(interp, 1)[0]
    assert same(answers(interp, values), answers(bare, values))
    assert interp.status.active == "xnnpack"
    assert invoke_threads("invoke-shapes-classifier-xnnpack") == 0


def test_reprobe_switches_back_once_the_preferred_entry_is_healthy(
    library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """While the native delegate keeps failing, re-probes find it unhealthy and XNNPACK goes on;
    once it is healthy a re-probe verifies it off the hot path and the next invoke runs on it."""
    interp = open_chain(opened, chain_of(library, control), reprobe_s=0.1)
    bare = load(CLASSIFIER, ONE_THREAD)
    values = inputs(interp, 4)
    control.write_text("fail")
    assert same(answers(interp, values[0]), answers(bare, values[0]))
    assert interp.status.active == "xnnpack"
    assert wait_for(
        lambda: interp.status.reasons["native"].startswith("verification invoke failed"), 5
    )
    assert same(answers(interp, values[1]), answers(bare, values[1]))
    assert interp.status.active == "xnnpack" and interp.status.pending == ""
    control.write_text("ok")
    assert wait_for(lambda: interp.status.pending == "native", 10)
    assert interp.status.active == "xnnpack"  # taken over by the inference thread, not the probe
    assert same(answers(interp, values[2]), answers(bare, values[2]))
    status = interp.status
    assert status.active == "native" and status.pending == "" and status.switches == 2
    assert status.last_switch is not None
    assert (status.last_switch.source, status.last_switch.target) == ("xnnpack", "native")
    assert status.last_switch.reason.startswith("re-probe")
    assert "native" not in status.reasons and interp.info.degraded == ""
    assert same(answers(interp, values[3]), answers(bare, values[3]))


def test_when_every_entry_fails_invoke_raises_until_a_reprobe_finds_one(
    library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """With nothing left to switch to, invoke raises DelegateError naming each entry's failure
    (the caller counts a failed frame); a later re-probe brings the chain back."""
    interp = open_chain(opened, (native(library, control),), reprobe_s=0.1)
    bare = load(CLASSIFIER, ONE_THREAD)
    values = inputs(interp, 1)[0]
    control.write_text("fail")
    for _ in range(2):
        with pytest.raises(DelegateError, match=r"no delegate of the chain native can run"):
            answers(interp, values)
    assert interp.status.active == ""
    assert interp.info.degraded.startswith("nothing can run it")
    control.write_text("ok")
    assert wait_for(lambda: interp.status.pending == "native", 10)
    assert same(answers(interp, values), answers(bare, values))
    assert interp.status.active == "native"


# -- loading -------------------------------------------------------------------------------


def test_an_external_delegate_that_cannot_be_used_is_a_delegate_error(
    library: Path, tmp_path: Path
) -> None:
    """RuntimeOptions.library: a missing library, one without the plugin symbols, and options
    the plugin refuses are each one DelegateError saying so (and nothing printed as ignored)."""
    no_symbols = ctypes.util.find_library("m")
    assert no_symbols is not None
    cases = [
        (str(tmp_path / "absent.so"), (), "No such file"),
        (no_symbols, (), "tflite_plugin_create_delegate"),
        (str(library), (("colour", "red"),), "unknown option"),
    ]
    for lib, options, detail in cases:
        with pytest.raises(DelegateError, match="could not be loaded") as caught:
            load(CLASSIFIER, RuntimeOptions(library=lib, library_options=options))
        assert detail in str(caught.value)
        assert caught.value.exit_code == EX_CONFIG


def test_a_chain_with_nothing_loadable_lists_each_reason(
    library: Path, control: Path, tmp_path: Path
) -> None:
    """When no entry loads, the error is a DelegateError (exit 78) giving every entry's own
    reason, in chain order."""
    control.write_text("refuse")
    links = (
        native(library, control),
        Link("missing", RuntimeOptions(library=str(tmp_path / "absent.so"))),
        *chain(["edgetpu"]),
    )
    with pytest.raises(DelegateError) as caught:
        failover.load(CLASSIFIER, links)
    text = str(caught.value)
    assert caught.value.exit_code == EX_CONFIG
    assert f"no delegate of the chain native, missing, edgetpu can run {CLASSIFIER}: " in text
    assert text.index("native: ") < text.index("missing: ") < text.index("edgetpu: ")
    assert "refusing the graph on command" in text
    assert "absent.so could not be loaded" in text
    assert "no Edge TPU could be used" in text


def test_load_skips_an_entry_whose_verification_invoke_fails_or_hangs(
    library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """An entry that loads but fails its verification invoke, or does not answer it within
    VERIFY_FACTOR × invoke_timeout_ms, is skipped at load with that reason."""
    control.write_text("fail")
    interp = open_chain(opened, chain_of(library, control))
    assert interp.status.active == "xnnpack" and interp.status.last_switch is None
    assert interp.status.reasons["native"].startswith("verification invoke failed")
    control.write_text("stall")
    t0 = time.perf_counter()
    interp = open_chain(opened, chain_of(library, control), invoke_timeout_ms=40)
    assert time.perf_counter() - t0 < 0.4 + 2.0
    assert interp.status.active == "xnnpack"
    assert "verification invoke timed out after 400 ms" in interp.status.reasons["native"]


def test_edgetpu_then_xnnpack_without_a_coral_runs_on_xnnpack_and_says_why(
    opened: list[FailoverInterpreter],
) -> None:
    """On a machine without a Coral, the chain edgetpu,xnnpack runs on XNNPACK: the status names
    why the Edge TPU is not used and the load info says the model runs degraded."""
    interp = open_chain(opened, chain(["edgetpu", "xnnpack"], ONE_THREAD))
    bare = load(CLASSIFIER, ONE_THREAD)
    status = interp.status
    assert status.active == "xnnpack" and status.chain == ("edgetpu", "xnnpack")
    assert "no Edge TPU could be used" in status.reasons["edgetpu"]
    assert interp.info.delegate == "xnnpack"
    assert interp.info.degraded.startswith(
        "running on xnnpack, not edgetpu: no Edge TPU could be used"
    )
    for values in inputs(interp, 2):
        assert same(answers(interp, values), answers(bare, values))


def test_chain_names_become_links_and_bad_chains_are_refused() -> None:
    """chain() keeps the order and the base options (with fallback off: the chain is the
    fallback); an empty chain, an unknown name or a repeated one is a ModelError."""
    links = chain(["edgetpu", "xnnpack"], RuntimeOptions(threads=2, device="usb:0"))
    assert [lk.name for lk in links] == ["edgetpu", "xnnpack"]
    assert [lk.options.delegate for lk in links] == ["edgetpu", "xnnpack"]
    assert {(lk.options.threads, lk.options.device, lk.options.fallback) for lk in links} == {
        (2, "usb:0", "fail")
    }
    with pytest.raises(ModelError, match="empty"):
        chain([])
    with pytest.raises(ModelError, match="unknown delegate 'coral'"):
        chain(["coral", "xnnpack"])
    with pytest.raises(ModelError, match="xnnpack appears twice"):
        chain(["xnnpack", "cpu", "xnnpack"])
    with pytest.raises(ModelError, match="empty"):
        failover.load(CLASSIFIER, [])


def test_a_closed_chain_ends_its_threads_and_refuses_to_run(library: Path, control: Path) -> None:
    """close() ends the invoke and re-probe threads; the interpreter then refuses to run."""
    control.write_text("fail")
    interp = failover.load(CLASSIFIER, chain_of(library, control), reprobe_s=0.05)
    assert interp.status.active == "xnnpack"
    assert invoke_threads("reprobe-shapes-classifier") == 1
    assert invoke_threads("invoke-shapes-classifier-xnnpack") == 1
    interp.close()
    assert wait_for(lambda: invoke_threads("reprobe-shapes-classifier") == 0, 5)
    assert wait_for(lambda: invoke_threads("invoke-shapes-classifier-xnnpack") == 0, 5)
    with pytest.raises(DelegateError, match="closed"):
        interp.invoke()


def test_an_unusable_model_file_is_a_model_error_not_a_chain_of_reasons(tmp_path: Path) -> None:
    """A missing or corrupt model is reported once as the file's problem, not once per entry."""
    with pytest.raises(ModelError, match="model file not found") as caught:
        failover.load(tmp_path / "none.tflite", chain(["edgetpu", "xnnpack"]))
    assert type(caught.value) is ModelError


# -- cost ----------------------------------------------------------------------------------


def test_the_watchdog_adds_little_to_each_invoke(opened: list[FailoverInterpreter]) -> None:
    """Handing each invoke to its thread and back costs well under a millisecond: the median of
    interleaved rounds over the same interpreter with and without the wrapper (nothing polls)."""
    interp = open_chain(opened, chain(["xnnpack"], ONE_THREAD))
    inner = interp._entry.interp if interp._entry else None
    assert inner is not None
    values = inputs(interp, 1)[0]
    rounds: dict[str, list[float]] = {"bare": [], "wrapped": []}
    for r in range(15):
        for name in ("bare", "wrapped") if r % 2 else ("wrapped", "bare"):
            target: FailoverInterpreter | Interpreter = inner if name == "bare" else interp
            t0 = time.perf_counter()
            for _ in range(40):
                target.set_input(values)
                target.invoke()
            rounds[name].append((time.perf_counter() - t0) / 40 * 1000)
    overhead_ms = statistics.median(rounds["wrapped"]) - statistics.median(rounds["bare"])
    assert overhead_ms < 0.5, rounds
