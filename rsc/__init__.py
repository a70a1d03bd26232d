"""rsc: remote structured concurrency for Python.

Spawn named computations on other processes with the guarantees structured
concurrency gives inside one: capabilities, regions, leases, idempotency.
"""

__version__ = "0.1.0"

from rsc._compiled import bind as _bind

# Modules compiled from their own source (rsc._compiled); importing rsc
# imports none of them.
COMPILED = ("capability", "clock", "cx", "handle", "links", "remote")
_bind(__name__, COMPILED)

# Public names resolve on first use, so importing a low layer (rsc._engine,
# rsc._core) does not drag in asyncio and the transport.
_EXPORTS = {
    "rsc.cx": ("Cx", "RemoteCap"),
    "rsc.errors": (
        "Cancelled", "CapabilityDenied", "CapacityExceeded", "IdempotencyConflict",
        "InvalidArgument", "InvalidInput", "LeaseError", "LeaseExpired", "NoCapability", "NodeShuttingDown",
        "NodeUnreachable", "ProtocolError", "RemoteCancelled", "RemoteError", "RemoteFailed",
        "RemotePanicked", "RemoteProtocolError", "ResultTooLarge", "RuntimeClosed",
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
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}


_SUBMODULES = frozenset({"lease", "errors", "types", "regions", "sagas", "trace", "launch", "cx",
                         "remote"})


def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBMODULES:  # rsc.lease.retry(...) works after a bare `import rsc`
        return importlib.import_module(f"rsc.{name}")
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'rsc' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Budget", "CancelKind", "Cancelled", "CancelReason", "CapabilityDenied", "CapacityExceeded",
    "CompensationError", "CompensationResult", "ComputationName", "Cx", "IdempotencyConflict",
    "IdempotencyKey", "InvalidArgument", "InvalidInput", "Lease", "LeaseError", "LeaseExpired",
    "LeaseState", "NoCapability", "NodeId", "NodeShuttingDown", "NodeUnreachable", "ProtocolError",
    "region", "Region",
    "Registry", "RemoteCancelled", "RemoteCap", "RemoteError", "RemoteFailed", "RemoteHandle",
    "RemoteInput", "RemoteOutcome", "RemotePanicked", "RemoteProtocolError", "RemoteTaskId",
    "RemoteTaskState", "ResultTooLarge", "Runtime", "RuntimeClosed", "Saga", "saga",
    "SagaState", "TlsConfig", "SagaStepError", "SerializationError", "Severity", "spawn_remote",
    "SpawnRejected", "UnknownComputation", "__version__", "TimeLimitExceeded",
    "MemoryLimitExceeded", "WorkerCrashed",
]
