"""rsc: remote structured concurrency for Python.

Spawn named computations on other processes with the guarantees structured
concurrency gives inside one: capabilities, regions, leases, idempotency.
"""

__version__ = "0.1.0"

from rsc._compiled import bind as _bind
from rsc._lazy import lazy_exports as _lazy_exports

# Modules compiled from their own source (rsc._compiled); importing rsc
# imports none of them.
COMPILED = ("capability", "clock", "cx", "handle", "links", "remote", "value_codec")
_bind(__name__, COMPILED)

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what mypy and pyright see: the real classes (at run time, see below)
    # (rsc.launch, the CLI's launcher, is left out: it imports the node, which imports rsc)
    from rsc import (
        cx as cx, errors as errors, lease as lease, regions as regions, remote as remote,
        sagas as sagas, trace as trace, types as types,
    )
    from rsc.catalogue import ComputationInfo as ComputationInfo
    from rsc.cx import Cx as Cx, RemoteCap as RemoteCap
    from rsc.errors import (
        Cancelled as Cancelled, CapabilityDenied as CapabilityDenied,
        CatalogueUnavailable as CatalogueUnavailable, CodecMismatch as CodecMismatch,
        ComputationNotServed as ComputationNotServed, CapacityExceeded as CapacityExceeded, IdempotencyConflict as IdempotencyConflict,
        InvalidArgument as InvalidArgument, InvalidInput as InvalidInput, LeaseError as LeaseError,
        LeaseExpired as LeaseExpired, MemoryLimitExceeded as MemoryLimitExceeded,
        NoCapability as NoCapability, NodeShuttingDown as NodeShuttingDown,
        NodeUnreachable as NodeUnreachable, ProtocolError as ProtocolError,
        RemoteCancelled as RemoteCancelled, RemoteError as RemoteError, RemoteFailed as RemoteFailed,
        RemotePanicked as RemotePanicked, RemoteProtocolError as RemoteProtocolError,
        ResultNotKept as ResultNotKept, ResultTooLarge as ResultTooLarge, RuntimeClosed as RuntimeClosed,
        SerializationError as SerializationError, SpawnRejected as SpawnRejected,
        TimeLimitExceeded as TimeLimitExceeded, UnknownComputation as UnknownComputation,
        WorkerCrashed as WorkerCrashed,
    )
    from rsc.handle import RemoteHandle as RemoteHandle
    from rsc.lease import Lease as Lease, LeaseState as LeaseState
    from rsc.regions import Region as Region, region as region
    from rsc.registry import Registry as Registry
    from rsc.remote import Runtime as Runtime, spawn_remote as spawn_remote
    from rsc.sagas import (
        CompensationError as CompensationError, CompensationResult as CompensationResult,
        Saga as Saga, SagaState as SagaState, SagaStepError as SagaStepError, saga as saga,
    )
    from rsc.transport.tls import TlsConfig as TlsConfig
    from rsc.types import (
        Budget as Budget, CancelKind as CancelKind, CancelReason as CancelReason,
        ComputationName as ComputationName, IdempotencyKey as IdempotencyKey, NodeId as NodeId,
        RemoteInput as RemoteInput, RemoteOutcome as RemoteOutcome, RemoteTaskId as RemoteTaskId,
        RemoteTaskState as RemoteTaskState, Severity as Severity,
    )

# Public names resolve on first use, so importing a low layer (rsc._engine,
# rsc._core) does not drag in asyncio and the transport. tests/test_typing.py
# holds the static list above to this one.
_EXPORTS = {
    "rsc.catalogue": ("ComputationInfo",),
    "rsc.cx": ("Cx", "RemoteCap"),
    "rsc.errors": (
        "Cancelled", "CapabilityDenied", "CatalogueUnavailable", "CodecMismatch",
        "ComputationNotServed", "CapacityExceeded", "IdempotencyConflict",
        "InvalidArgument", "InvalidInput", "LeaseError", "LeaseExpired", "NoCapability", "NodeShuttingDown",
        "NodeUnreachable", "ProtocolError", "RemoteCancelled", "RemoteError", "RemoteFailed",
        "RemotePanicked", "RemoteProtocolError", "ResultNotKept", "ResultTooLarge", "RuntimeClosed",
        "SerializationError", "SpawnRejected", "UnknownComputation", "TimeLimitExceeded",
        "MemoryLimitExceeded", "WorkerCrashed",
    ),
    "rsc.lease": ("Lease", "LeaseState"),
    "rsc.registry": ("Registry",),
    "rsc.regions": ("Region", "region"),
    "rsc.sagas": ("CompensationError", "CompensationResult", "Saga", "SagaState", "SagaStepError",
                  "saga"),
    "rsc.handle": ("RemoteHandle",),
    "rsc.remote": ("Runtime", "spawn_remote"),
    "rsc.transport.tls": ("TlsConfig",),
    "rsc.types": (
        "Budget", "CancelKind", "CancelReason", "ComputationName", "IdempotencyKey", "NodeId",
        "RemoteInput", "RemoteOutcome", "RemoteTaskId", "RemoteTaskState", "Severity",
    ),
}
# Submodules a bare `import rsc` reaches as attributes (rsc.lease.retry(...)).
_SUBMODULES = ("lease", "errors", "types", "regions", "sagas", "trace", "launch", "cx", "remote")
__getattr__ = _lazy_exports(__name__, globals(), _EXPORTS, _SUBMODULES)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Budget", "CancelKind", "Cancelled", "CancelReason", "CapabilityDenied", "CapacityExceeded",
    "CatalogueUnavailable", "CodecMismatch", "ComputationInfo", "ComputationNotServed",
    "CompensationError", "CompensationResult", "ComputationName", "Cx", "IdempotencyConflict",
    "IdempotencyKey", "InvalidArgument", "InvalidInput", "Lease", "LeaseError", "LeaseExpired",
    "LeaseState", "NoCapability", "NodeId", "NodeShuttingDown", "NodeUnreachable", "ProtocolError",
    "region", "Region",
    "Registry", "RemoteCancelled", "RemoteCap", "RemoteError", "RemoteFailed", "RemoteHandle",
    "RemoteInput", "RemoteOutcome", "RemotePanicked", "RemoteProtocolError", "RemoteTaskId",
    "RemoteTaskState", "ResultNotKept", "ResultTooLarge", "Runtime", "RuntimeClosed", "Saga", "saga",
    "SagaState", "TlsConfig", "SagaStepError", "SerializationError", "Severity", "spawn_remote",
    "SpawnRejected", "UnknownComputation", "__version__", "TimeLimitExceeded",
    "MemoryLimitExceeded", "WorkerCrashed",
]
