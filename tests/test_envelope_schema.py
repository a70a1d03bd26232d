"""The wire schema (rsc._core.schema) is the one place a message's layout is written.

The message classes, both envelope twins and the named field indices agree with
it; and a field added to a copy of the schema round-trips through classes and
a pure codec built from that copy, with nothing else edited.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import rsc._core as core
from rsc._core import messages as m
from rsc._core import schema
from rsc.errors import InvalidArgument

CORE_DIR = Path(core.__file__).parent
SPECS = {spec.wire_name: spec for spec in schema.MESSAGES}


class Marker:
    """A value no field type accepts, distinct per field."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"Marker({self.index})"


def _unset(cls: type) -> Any:
    return cls.__new__(cls)


def test_schema_is_well_formed() -> None:
    schema.check(schema.MESSAGES)
    assert [spec.kind for spec in schema.MESSAGES] == sorted(schema.BY_KIND)
    assert {code for spec in schema.MESSAGES for _name, code in spec.fields} == set(
        schema.FIELD_TYPES)
    with pytest.raises(ValueError, match="payload follows an outcome"):
        schema.check((schema.MessageSpec(20 - 1, "X", "X", (("p", schema.PAYLOAD),)),))
    with pytest.raises(ValueError, match="not a Python identifier"):
        schema.check((schema.MessageSpec(5, "X", "X", (("class", schema.UINT),)),))
    with pytest.raises(ValueError, match="unknown field type"):
        schema.check((schema.MessageSpec(5, "X", "X", (("p", "float"),)),))


@pytest.mark.parametrize("name", SPECS)
def test_message_classes_follow_the_schema(name: str) -> None:
    spec = SPECS[name]
    cls = m.MESSAGE_CLASSES[spec.kind]
    assert cls.__name__ == spec.class_name and getattr(m, spec.class_name) is cls
    assert cls.kind == spec.kind
    assert cls.__slots__ == cls.fields == spec.field_names
    assert cls.__slots_all__() == ("sender", "sender_time") + spec.field_names
    params = list(inspect.signature(cls).parameters)
    assert params == ["sender", "sender_time", *spec.field_names]
    assert cls.__module__ == "rsc._core.messages"
    assert getattr(m, name) == spec.kind  # the kind constants are re-exported


def test_kinds_of_both_twins_are_the_schema(both_envelopes: tuple[ModuleType, ModuleType]
                                            ) -> None:
    c, py = both_envelopes
    kinds = set(schema.BY_KIND)
    assert set(c._SCHEMA) == set(c._WIRE_NAMES) == kinds
    assert set(py._READERS) == set(py._SHAPES) == {k for k in kinds}
    assert {kind for kind, _write in py._WRITERS.values()} == kinds
    for spec in schema.MESSAGES:
        assert c._WIRE_NAMES[spec.kind] == spec.wire_name
        assert tuple(name for name, _code in c._SCHEMA[spec.kind]) == spec.field_names
        assert tuple(c._SCHEMA[spec.kind]) == tuple(
            (name, c._FIELD_CODES[code]) for name, code in spec.fields)
        assert c._FIELD_NAMES[spec.kind] == ("sender", "sender_time") + spec.field_names


@pytest.mark.parametrize("name", SPECS)
def test_fields_and_field_indices_follow_the_schema(envelope_mod: ModuleType, name: str
                                                    ) -> None:
    # fields() reads the slots at the offsets the codec's tables hold: a marker per
    # field comes back at the field's schema index, and the named index finds it.
    spec = SPECS[name]
    msg = _unset(m.MESSAGE_CLASSES[spec.kind])
    msg.sender, msg.sender_time = "n", 1
    for index, field in enumerate(spec.field_names):
        setattr(msg, field, Marker(index))
    values = envelope_mod.fields(msg)
    assert [v.index for v in values] == list(range(len(spec.fields)))
    index_class = getattr(schema, spec.class_name + "F")
    for index, field in enumerate(spec.field_names):
        assert getattr(index_class, field) == index
        assert values[getattr(index_class, field)] is getattr(msg, field)


@pytest.mark.parametrize("name", [n for n in SPECS if SPECS[n].fields])
def test_encode_names_each_field_as_the_schema_does(envelope_mod: ModuleType, name: str
                                                    ) -> None:
    # Every field of every kind refuses a value no field type takes, and the error
    # names the schema's field: each twin checks the field the schema puts there.
    spec = SPECS[name]
    for index, field in enumerate(spec.field_names):
        msg = _unset(m.MESSAGE_CLASSES[spec.kind])
        msg.sender, msg.sender_time = "n", 1
        for other_index, (other, code) in enumerate(spec.fields):
            setattr(msg, other, _valid(code) if other_index < index else Marker(other_index))
        with pytest.raises(InvalidArgument, match=rf"^{spec.class_name}\.{field} "):
            envelope_mod.encode(msg)


def _valid(code: str) -> Any:
    return {schema.UINT: 1, schema.STR: "s", schema.BIN: b"", schema.BIN_OR_NIL: None,
            schema.BIN32: bytes(32), schema.BIN32_OR_NIL: None, schema.BUDGET: None,
            schema.REASON: (0, None), schema.STATUS: 0, schema.STATE: 0,
            schema.OUTCOME: 1, schema.PAYLOAD: "failed", schema.VERSION: 1,
            schema.STR_MAP: {}, schema.UINT_LIST: [], schema.FLAG: False,
            schema.SEGMENTS: None}[code]


def test_the_declared_message_classes_agree_with_the_schema() -> None:
    """What type checkers read of each class (its declaration) is the schema's
    layout: field names in wire order, each with its field type's Python type."""
    assert m.declaration_mismatches() == []
    assert set(m.DECLARED) == {"Message"} | {spec.class_name for spec in schema.MESSAGES}
    assert set(schema.PY_TYPES) == set(schema.FIELD_TYPES)
    assert m.DECLARED["SpawnRequest"]["budget"] == "WireBudget | None"


# --- one place: a field added to a copy of the schema -------------------------------


def _exec_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_with(monkeypatch: pytest.MonkeyPatch, extra: dict[int, tuple[tuple[str, str], ...]]
               ) -> tuple[ModuleType, ModuleType]:
    """Message classes and a pure codec built, as the package builds them, from a
    copy of the schema with ``extra`` fields appended; the package's own modules
    are untouched once the test ends."""
    fake = ModuleType("rsc._core.schema")
    fake.__dict__.update({k: v for k, v in vars(schema).items() if not k.startswith("__")})
    fake.MESSAGES = tuple(spec._replace(fields=spec.fields + extra.get(spec.kind, ()))
                          for spec in schema.MESSAGES)
    fake.BY_KIND = {spec.kind: spec for spec in fake.MESSAGES}
    fake.check(fake.MESSAGES)
    monkeypatch.setitem(sys.modules, "rsc._core.schema", fake)
    monkeypatch.setattr(core, "schema", fake)
    messages = _exec_module("rsc._core.messages", CORE_DIR / "messages.py")
    monkeypatch.setitem(sys.modules, "rsc._core.messages", messages)
    monkeypatch.setattr(core, "messages", messages)
    codec = _exec_module("rsc._core._envelope_py_copy", CORE_DIR / "_envelope_py.py")
    return messages, codec


def test_a_trailing_field_added_in_the_schema_alone_round_trips(
        monkeypatch: pytest.MonkeyPatch, both_envelopes: tuple[ModuleType, ModuleType]) -> None:
    c, py = both_envelopes
    messages, codec = _copy_with(monkeypatch, {
        schema.SPAWN_REQUEST: (("urgent", schema.FLAG),),  # after optional fields, only those
        schema.SPAWN_ACK: (("worker", schema.STR), ("trace", schema.BIN_OR_NIL)),
        schema.STATUS_REQUEST: (("detail", schema.STR_MAP),),
    })
    spawn = messages.SpawnRequest("origin-1", 7, 42, "math.add", b"\x01", 30_000, bytes(16),
                                  None, "origin-1", 3, 9, None, urgent=True)
    result = messages.SpawnAck("node-1", (5, 1), 42, m.ACK_REJECTED, 4, "no", "node-1",
                               "worker-2", b"\xff")
    status = messages.StatusRequest("origin-1", {"o": 1}, {"depth": [1, 2]})
    for msg in (spawn, result, status):
        data = codec.encode(msg)
        assert codec.decode(data) == msg
        assert codec.fields(msg)[-1] == getattr(msg, messages.MESSAGE_CLASSES[msg.kind]
                                                .fields[-1])
        # A v1 receiver of today (either twin) reads it and drops the new fields.
        today = c.decode(data)
        assert type(today) is m.MESSAGE_CLASSES[msg.kind]
        assert py.decode(data) == today
        assert c.fields(today) == codec.fields(msg)[:len(today.fields)]
    # The walked path (bodies over 64 KiB) is driven by the same schema.
    large = messages.SpawnAck("node-1", 1, 42, m.ACK_REJECTED, 4, "x" * 70_000, "node-1",
                              "worker-2", None)
    assert codec.decode(codec.encode(large)) == large
    # What type checkers read is now behind the schema, and the suite says so.
    drift = messages.declaration_mismatches()
    assert [d.split(" declares")[0] for d in drift] == [
        "class SpawnRequest", "class SpawnAck", "class StatusRequest"], drift
    assert "'urgent': 'bool'" in drift[0] and "in this order" in drift[0]
    with pytest.raises(InvalidArgument, match=r"^SpawnRequest\.urgent "):
        codec.encode(messages.SpawnRequest("origin-1", 7, 42, "math.add", b"", 1, bytes(16),
                                           None, "origin-1", 3, 9, None, False, None, "soon"))
    # flags left clear are left out: today's bytes
    clear = messages.SpawnRequest("origin-1", 7, 42, "math.add", b"", 1, bytes(16), None,
                                  "origin-1", 3, 9, None)
    assert codec.encode(clear) == c.encode(m.SpawnRequest(*(getattr(clear, f) for f in
                                                             m.SpawnRequest.__slots_all__())))


def test_expect_fields_guards_a_positional_unpack() -> None:
    names = schema.BY_KIND[schema.SPAWN_ACK].field_names
    assert schema.expect_fields(schema.SPAWN_ACK, *names) == names
    with pytest.raises(ImportError, match="SPAWN_ACK fields are"):
        schema.expect_fields(schema.SPAWN_ACK, *names[:-1])
    with pytest.raises(ImportError, match="SPAWN_ACK fields are"):
        schema.expect_fields(schema.SPAWN_ACK, *reversed(names))
    with pytest.raises(ImportError, match="no message kind 7"):
        schema.expect_fields(7)


def _unpacking_sites() -> list[tuple[str, str, int]]:
    """``(where, message class, targets)`` for each ``a, b, ... = _fields(msg)``
    in rsc/ whose function annotates ``msg`` with a message class."""
    import ast

    sites = []
    for path in sorted((CORE_DIR.parent).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            annotations = {a.arg: ast.unparse(a.annotation) for a in func.args.args
                           if a.annotation is not None}
            for node in ast.walk(func):
                if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                        and ast.unparse(node.value.func).endswith("fields")
                        and len(node.value.args) == 1
                        and isinstance(node.targets[0], ast.Tuple)):
                    cls = annotations.get(ast.unparse(node.value.args[0]), "")
                    sites.append((f"{path.name}:{node.lineno}", cls.split(".")[-1],
                                  len(node.targets[0].elts)))
    return sites


def test_positional_unpacking_sites_take_every_field() -> None:
    # Until every site reads fields by name (SpawnRequestF.computation) or is
    # guarded by expect_fields, a field added to the schema must show up here.
    classes = {spec.class_name: spec for spec in schema.MESSAGES}
    for where, cls, targets in _unpacking_sites():
        assert cls in classes, f"{where}: cannot tell which message is unpacked"
        assert targets == len(classes[cls].fields), (
            f"{where} unpacks {targets} fields of {cls}; the schema lists "
            f"{classes[cls].field_names}")


@pytest.mark.parametrize("outcome", sorted(schema.PAYLOAD_TYPES))
def test_payload_types_by_outcome_follow_the_schema(both_envelopes: tuple[ModuleType, ModuleType],
                                                    outcome: int) -> None:
    c, py = both_envelopes
    fits = _valid(schema.PAYLOAD_TYPES[outcome])
    if schema.PAYLOAD_TYPES[outcome] == schema.STR:
        fits = "boom"
    msg = m.ResultDelivery("node-1", 1, 42, outcome, fits, 5)
    assert c.encode(msg) == py.encode(msg)
    assert c.decode(c.encode(msg)) == py.decode(py.encode(msg)) == msg
    for unfit in ({schema.BIN: "text", schema.STR: b"bytes", schema.REASON: b"bytes"}
                  [schema.PAYLOAD_TYPES[outcome]],):
        for twin in (c, py):
            with pytest.raises(InvalidArgument, match=r"^ResultDelivery\.payload "):
                twin.encode(m.ResultDelivery("node-1", 1, 42, outcome, unfit, 5))
