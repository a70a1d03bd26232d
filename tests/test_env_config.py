"""``rsc node`` options from the environment (``RSC_<OPTION>``; issue 15):
values, flags, lists, the command line winning, and a bad value named."""

from __future__ import annotations

import argparse

import pytest

from rsc.node.main import add_arguments


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rsc node")
    add_arguments(p)
    return p


def test_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {"RSC_NAME": "rsc-node-2", "RSC_LISTEN": "tcp:[::]:7000",
                       "RSC_REGISTRY": "m:r", "RSC_CAPACITY": "7", "RSC_GRACE": "2.5",
                       "RSC_INSECURE": "true", "RSC_ALLOW_UID": "1001, 1002"}.items():
        monkeypatch.setenv(var, value)
    args = parser().parse_args([])
    assert (args.name, args.listen, args.registry) == ("rsc-node-2", "tcp:[::]:7000", "m:r")
    assert (args.capacity, args.grace, args.insecure, args.allow_uid) == (7, 2.5, True, [1001, 1002])
    assert parser().parse_args(["--capacity", "9"]).capacity == 9
    monkeypatch.setenv("RSC_INSECURE", "0")
    assert parser().parse_args([]).insecure is False


def test_required_options_stay_required_without_their_variable(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("RSC_NAME", "RSC_LISTEN", "RSC_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit):
        parser().parse_args([])
    assert "--name" in capsys.readouterr().err


@pytest.mark.parametrize("var, value, said", [
    ("RSC_CAPACITY", "lots", "RSC_CAPACITY='lots': --capacity takes an integer"),
    ("RSC_ALLOW_UID", "root", "RSC_ALLOW_UID='root': --allow-uid takes numbers"),
])
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str],
                                        var: str, value: str, said: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as exit_:
        parser()
    assert exit_.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize("value", ["maybe", "enabled", "2"])
def test_a_switch_variable_with_another_word_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], value: str) -> None:
    """A typo in a switch's variable must not leave it silently off: for
    RSC_REQUIRE_CAPABILITY that would run work without checking tokens."""
    monkeypatch.setenv("RSC_REQUIRE_CAPABILITY", value)
    with pytest.raises(SystemExit) as exit_:
        parser()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"RSC_REQUIRE_CAPABILITY={value!r}: --require-capability is a switch" in err


@pytest.mark.parametrize("value, on", [("1", True), ("TRUE", True), (" on ", True), ("yes", True),
                                       ("0", False), ("off", False), ("No", False), ("false", False)])
def test_a_switch_variable_reads_on_and_off_words(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv("RSC_REQUIRE_CAPABILITY", value)
    assert parser().parse_args(["--name", "n", "--listen", "unix:/x", "--registry", "m:r"]).require_capability is on
