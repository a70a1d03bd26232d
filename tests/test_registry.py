"""Named computations: registration, codecs, validators, load_registry."""

from __future__ import annotations

import functools
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from rsc.errors import InvalidArgument, SerializationError
from rsc.registry import Computation, Registry, load_registry
from rsc.types import ComputationName

# -- registration ------------------------------------------------------------------


def test_decorator_with_name_registers_and_returns_function_unchanged() -> None:
    reg = Registry()

    @reg.computation("encode_block")
    async def encode(cx: Any, data: bytes) -> bytes:
        return data

    comp = reg.get("encode_block")
    assert comp is not None
    assert comp.fn is encode
    assert comp.is_async
    assert comp.name == "encode_block" and isinstance(comp.name, ComputationName)
    assert comp.codec is None and comp.validate is None


def test_decorator_without_name_uses_function_name() -> None:
    reg = Registry()

    @reg.computation()
    def square(cx: Any, data: bytes) -> bytes:
        return data

    @reg.computation
    def cube(cx: Any, data: bytes) -> bytes:
        return data

    assert reg.names() == ("square", "cube")
    assert reg.get("square").fn is square  # type: ignore[union-attr]
    assert not reg.get("cube").is_async  # type: ignore[union-attr]


def test_decorator_passes_codec_and_validator() -> None:
    reg = Registry()

    def check(v: Any) -> bool:
        return isinstance(v, list)

    @reg.computation("total", codec="msgpack", validate=check)
    def total(cx: Any, values: list[int]) -> int:
        return sum(values)

    comp = reg.get("total")
    assert comp is not None and comp.codec == "msgpack" and comp.validate is check


def test_register_returns_computation() -> None:
    reg = Registry()

    def f(cx: Any, data: bytes) -> bytes:
        return data

    comp = reg.register("f", f, codec="msgpack")
    assert isinstance(comp, Computation)
    assert reg.get("f") is comp


def test_mapping_queries() -> None:
    reg = Registry()
    for n in ("b", "a", "c"):
        reg.register(n, lambda cx, data: data)
    assert len(reg) == 3
    assert "a" in reg and "z" not in reg and 5 not in reg and ["a"] not in reg
    assert reg.names() == ("b", "a", "c")
    assert list(reg) == ["b", "a", "c"]
    assert reg.get("z") is None and reg.get(5) is None  # type: ignore[arg-type]
    assert "Registry(" in repr(reg)


def test_duplicate_name_is_rejected_and_named() -> None:
    reg = Registry()
    reg.register("encode_block", lambda cx, data: data)
    with pytest.raises(InvalidArgument, match="'encode_block' is already registered"):
        reg.register("encode_block", lambda cx, data: data)
    with pytest.raises(InvalidArgument, match="encode_block"):

        @reg.computation("encode_block")
        def again(cx: Any, data: bytes) -> bytes:
            return data

    assert len(reg) == 1


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "must not be empty"),
        ("a" * 256, "at most 255"),
        ("é" * 128, "at most 255"),  # 256 bytes in UTF-8
        ("bad\nname", "control characters"),
        ("tab\tname", "control characters"),
        ("del\x7f", "control characters"),
        (5, "must be a str"),
        (None, "must be a str"),
    ],
)
def test_bad_names_are_rejected(name: Any, match: str) -> None:
    reg = Registry()
    with pytest.raises(InvalidArgument, match=match):
        reg.register(name, lambda cx, data: data)
    assert len(reg) == 0


def test_longest_name_is_accepted() -> None:
    reg = Registry()
    reg.register("a" * 255, lambda cx, data: data)
    reg.register("é" * 127 + "a", lambda cx, data: data)  # 255 bytes
    assert len(reg) == 2


def _one_arg(cx: Any) -> bytes:
    return b""


def _no_args() -> bytes:
    return b""


def _three_args(cx: Any, data: bytes, extra: int) -> bytes:
    return b""


def _kw_only(cx: Any, *, data: bytes) -> bytes:
    return b""


@pytest.mark.parametrize("fn", [_one_arg, _no_args, _three_args, _kw_only])
def test_wrong_arity_is_rejected_with_signature(fn: Callable[..., Any]) -> None:
    with pytest.raises(InvalidArgument, match=r"must accept two positional arguments \(cx, data\)") as ei:
        Registry().register("f", fn)
    assert fn.__name__ in str(ei.value)


def _with_default(cx: Any, data: bytes, extra: int = 1) -> bytes:
    return b""


def _varargs(*args: Any) -> bytes:
    return b""


class _SyncCallable:
    def __call__(self, cx: Any, data: bytes) -> bytes:
        return data


class _AsyncCallable:
    async def __call__(self, cx: Any, data: bytes) -> bytes:
        return data


class _Holder:
    async def method(self, cx: Any, data: bytes) -> bytes:
        return data

    def sync_method(self, cx: Any, data: bytes) -> bytes:
        return data


async def _async_three(prefix: bytes, cx: Any, data: bytes) -> bytes:
    return prefix + data


def _sync_three(prefix: bytes, cx: Any, data: bytes) -> bytes:
    return prefix + data


@pytest.mark.parametrize(
    ("fn", "is_async"),
    [
        (_with_default, False),
        (_varargs, False),
        (_SyncCallable(), False),
        (_AsyncCallable(), True),
        (_Holder().method, True),
        (_Holder().sync_method, False),
        (functools.partial(_async_three, b">"), True),
        (functools.partial(functools.partial(_async_three), b">"), True),
        (functools.partial(_sync_three, b">"), False),
        (lambda cx, data: data, False),
    ],
)
def test_callables_accepted_and_async_detected(fn: Callable[..., Any], is_async: bool) -> None:
    comp = Registry().register("f", fn)
    assert comp.is_async is is_async


def test_partial_needs_explicit_name_in_decorator() -> None:
    reg = Registry()
    with pytest.raises(InvalidArgument, match="no __name__"):
        reg.computation()(functools.partial(_sync_three, b">"))


def test_not_callable_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="must be a callable taking"):
        Registry().register("f", b"not a function")  # type: ignore[arg-type]


def test_generators_are_rejected() -> None:
    def gen(cx: Any, data: bytes) -> Iterator[bytes]:
        yield data

    async def agen(cx: Any, data: bytes) -> Any:
        yield data

    with pytest.raises(InvalidArgument, match="a generator function"):
        Registry().register("g", gen)
    with pytest.raises(InvalidArgument, match="an async generator function"):
        Registry().register("g", agen)


def test_bad_codec_and_validator_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="unknown codec 'json'"):
        Registry().register("f", lambda cx, data: data, codec="json")
    with pytest.raises(InvalidArgument, match="validate must be a callable"):
        Registry().register("f", lambda cx, data: data, validate=True)  # type: ignore[arg-type]


def test_computation_is_frozen() -> None:
    comp = Registry().register("f", lambda cx, data: data)
    with pytest.raises(AttributeError):
        comp.codec = "msgpack"  # type: ignore[misc]


# -- codecs ---------------------------------------------------------------------------


def _comp(codec: str | None = None, validate: Any = None) -> Computation:
    return Computation("c", lambda cx, data: data, codec=codec, validate=validate)


def test_raw_codec_passes_bytes_through() -> None:
    comp = _comp()
    data = b"\x00\xffraw"
    assert comp.decode_input(data) is data
    assert comp.encode_output(data) is data
    assert comp.encode_output(bytearray(b"ab")) == b"ab"
    assert comp.encode_output(memoryview(b"cd")) == b"cd"
    assert type(comp.encode_output(bytearray(b"ab"))) is bytes
    assert comp.check_input(b"anything") is None


@pytest.mark.parametrize("value", ["text", 5, None, [b"x"], {"a": 1}])
def test_raw_codec_output_must_be_bytes(value: Any) -> None:
    with pytest.raises(SerializationError, match=r"not bytes; return bytes, or register it with codec='msgpack'"):
        _comp().encode_output(value)


@pytest.mark.parametrize(
    "value",
    [None, True, 7, -3, 2**63, 1.5, "héllo", b"\x00bin", [1, [2, "x"]], {"k": [1, 2], "n": None}, {1: "int key"}],
)
def test_msgpack_round_trip(value: Any) -> None:
    comp = _comp("msgpack")
    data = comp.encode_output(value)
    assert isinstance(data, bytes)
    assert comp.decode_input(data) == value
    assert comp.check_input(data) is None


def test_msgpack_bytes_stay_bytes() -> None:
    comp = _comp("msgpack")
    assert comp.decode_input(comp.encode_output(b"raw")) == b"raw"
    assert msgpack.unpackb(comp.encode_output("s"), raw=False) == "s"


@pytest.mark.parametrize("bad", [b"\xc1", b"\x92\x01", b"", b"\x01\x02"])
def test_msgpack_bad_input(bad: bytes) -> None:
    comp = _comp("msgpack")
    with pytest.raises(SerializationError):
        comp.decode_input(bad)
    reason = comp.check_input(bad)
    assert reason is not None and "msgpack" in reason


@pytest.mark.parametrize("value", [object(), {1, 2}, 2**70, Exception("x")])
def test_msgpack_unencodable_output(value: Any) -> None:
    with pytest.raises(SerializationError, match="cannot pack"):
        _comp("msgpack").encode_output(value)


# -- validators ---------------------------------------------------------------------------


def test_validator_gets_decoded_input() -> None:
    seen: list[Any] = []

    def check(v: Any) -> bool:
        seen.append(v)
        return True

    comp = _comp("msgpack", check)
    assert comp.check_input(msgpack.packb({"n": 3})) is None
    assert seen == [{"n": 3}]


def test_validator_returning_false_rejects() -> None:
    comp = _comp("msgpack", lambda v: v < 10)
    assert comp.check_input(msgpack.packb(3)) is None
    reason = comp.check_input(msgpack.packb(30))
    assert reason is not None and "validator of 'c' rejected the input" in reason


def test_validator_returning_none_accepts() -> None:
    def check(v: Any) -> None:
        if v == b"bad":
            raise ValueError("input must not be 'bad'")

    comp = _comp(None, check)
    assert comp.check_input(b"good") is None
    reason = comp.check_input(b"bad")
    assert reason is not None and "input must not be 'bad'" in reason


def test_validator_exception_without_message_names_its_type() -> None:
    def check(v: Any) -> bool:
        raise KeyError

    reason = _comp(None, check).check_input(b"x")
    assert reason is not None and "KeyError" in reason


def test_validator_not_called_on_undecodable_input() -> None:
    called = []
    comp = _comp("msgpack", lambda v: called.append(v))
    assert comp.check_input(b"\xc1") is not None
    assert called == []


# -- load_registry -------------------------------------------------------------------------


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a uniquely named module into tmp_path (on sys.path); returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(source: str) -> str:
        name = f"rsc_test_regmod_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make
    for name in created:
        sys.modules.pop(name, None)


_REGISTRY_MODULE = """
    from rsc.registry import Registry

    registry = Registry()

    @registry.computation("echo")
    def echo(cx, data):
        return data

    class Holder:
        inner = Registry()

    not_a_registry = {"echo": echo}
"""


def test_load_registry(make_module: Callable[[str], str]) -> None:
    mod = make_module(_REGISTRY_MODULE)
    reg = load_registry(f"{mod}:registry")
    assert isinstance(reg, Registry) and "echo" in reg
    assert load_registry(f"{mod}:registry") is reg
    assert isinstance(load_registry(f"{mod}:Holder.inner"), Registry)


@pytest.mark.parametrize("spec", ["nocolon", "a:b:c", ":registry", "mod:", "1mod:x", "mod:x-y", "a..b:x", ""])
def test_load_registry_bad_spec(spec: str) -> None:
    with pytest.raises(InvalidArgument, match="package.module:attr"):
        load_registry(spec)


def test_load_registry_non_str() -> None:
    with pytest.raises(InvalidArgument, match="package.module:attr"):
        load_registry(None)  # type: ignore[arg-type]


def test_load_registry_missing_module() -> None:
    with pytest.raises(InvalidArgument, match=r"no module named 'rsc_no_such_module_xyz' \(looked in the current directory") as ei:
        load_registry("rsc_no_such_module_xyz:registry")
    assert isinstance(ei.value.__cause__, ImportError)


def test_load_registry_module_with_broken_import(make_module: Callable[[str], str]) -> None:
    mod = make_module("import rsc_dependency_that_is_missing_xyz\n")
    with pytest.raises(InvalidArgument, match=r"imports 'rsc_dependency_that_is_missing_xyz', which is not installed \(at .*:1;"):
        load_registry(f"{mod}:registry")


def test_load_registry_module_raising_on_import(make_module: Callable[[str], str]) -> None:
    mod = make_module("raise RuntimeError('boom at import')\n")
    with pytest.raises(InvalidArgument, match="raised RuntimeError: boom at import"):
        load_registry(f"{mod}:registry")


def test_load_registry_missing_attr(make_module: Callable[[str], str]) -> None:
    mod = make_module(_REGISTRY_MODULE)
    with pytest.raises(InvalidArgument, match="has no attribute 'nope'"):
        load_registry(f"{mod}:nope")
    with pytest.raises(InvalidArgument, match=rf"'{mod}:Holder' has no attribute 'missing'"):
        load_registry(f"{mod}:Holder.missing")


@pytest.mark.parametrize(("attr", "kind"), [("not_a_registry", "dict"), ("echo", "function"), ("Holder", "type")])
def test_load_registry_attr_not_a_registry(make_module: Callable[[str], str], attr: str, kind: str) -> None:
    mod = make_module(_REGISTRY_MODULE)
    with pytest.raises(InvalidArgument, match=f"names a {kind}, not an rsc Registry"):
        load_registry(f"{mod}:{attr}")


def test_node_admission_checks_each_computation_by_its_own_codec() -> None:
    """The node's admission remembers the last computation that needs no input
    check; one with a codec or a validator found after it is still checked."""
    from rsc.node.server import RegistryAdmission

    reg = Registry()
    reg.register("plain", lambda cx, data: data, inline=True)
    reg.register("packed", lambda cx, value: value, inline=True, codec="msgpack")
    adm = RegistryAdmission(reg)
    plain, packed = adm.find("plain"), adm.find("packed")
    assert adm.check(plain, b"\xc1") is None
    assert adm.check(packed, b"\xc1") is not None  # not MessagePack
    assert adm.check(plain, b"\xc1") is None
    assert adm.check(packed, msgpack.packb(1)) is None


def test_node_admission_finds_each_name_by_its_own_computation() -> None:
    """The node's admission answers a repeated name from the last one it found:
    alternating names, an unknown name after a known one, and a name registered
    after the admission was made each find their own computation (or None)."""
    from rsc.node.server import RegistryAdmission

    reg = Registry()
    a = reg.register("a", lambda cx, data: data, inline=True)
    b = reg.register("b", lambda cx, data: data, inline=True)
    adm = RegistryAdmission(reg)
    assert adm.find("nope") is None
    for _ in range(2):
        assert adm.find("a") is a and adm.find("a") is a
        assert adm.find("b") is b
        assert adm.find("nope") is None
    assert adm.find("".join(["a"])) is a  # an equal str, not the same object (as decoded)
    assert adm.find("late") is None
    late = reg.register("late", lambda cx, data: data, inline=True)
    assert adm.find("late") is late and adm.find("a") is a
