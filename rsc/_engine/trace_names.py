"""The names of rsc's trace events, in one place (public as ``rsc.trace.*``).

Every event a JSON-lines trace holds (``rsc.trace.Trace``) is named
``<area>::<what>``:

- ``remote::`` the remote-task protocol. The ten per-task events keep the
  names of the design rsc grows from: a spawn's request created, sent, its
  ACK received or its rejection, a cancel sent and received, a result
  delivered, a renewal sent and received, a lease expired; beside them the
  connection-level events (handshake, protocol and peer errors, a message
  dropped, a node found restarted);
- ``node::`` what only a node decides: a tombstone laid, an orphan cancelled,
  an output too large to deliver, a spawn refused for who sent it or for its
  capability token;
- ``lease::`` escalation of a lapsed lease;
- ``region::`` a region closing, or one left with live work (a leak);
- ``saga::`` a saga's steps and compensations (``rsc.sagas``).

Per-task events cost a trace call only when a trace is given.
"""

from __future__ import annotations

# -- remote::, per task (the original ten) --------------------------------------------------
SPAWN_REQUEST_CREATED = "remote::spawn_request_created"
SPAWN_REQUEST_SENT = "remote::spawn_request_sent"
SPAWN_ACK_RECEIVED = "remote::spawn_ack_received"
SPAWN_REJECTED = "remote::spawn_rejected"
CANCEL_SENT = "remote::cancel_sent"
CANCEL_RECEIVED = "remote::cancel_received"
RESULT_DELIVERED = "remote::result_delivered"
LEASE_RENEWAL_SENT = "remote::lease_renewal_sent"
LEASE_RENEWAL_RECEIVED = "remote::lease_renewal_received"
# an origin asked a node for a renewal group's full list (its digest disagreed)
LEASE_RESYNC_SENT = "remote::lease_resync_sent"
LEASE_EXPIRED = "remote::lease_expired"

# -- remote::, per connection ---------------------------------------------------------------
HANDSHAKE = "remote::handshake"
PROTOCOL_ERROR = "remote::protocol_error"
PEER_ERROR = "remote::peer_error"
DROPPED = "remote::dropped"
NODE_RESTARTED = "remote::node_restarted"

# -- node:: ---------------------------------------------------------------------------------
TOMBSTONE = "node::tombstone"
ORPHAN_CANCELLED = "node::orphan_cancelled"
RESULT_TOO_LARGE = "node::result_too_large"
SPAWN_ORIGIN_MISMATCH = "node::spawn_origin_mismatch"
CAPABILITY_DENIED = "node::capability_denied"

# -- lease::, region::, saga:: --------------------------------------------------------------
ESCALATE = "lease::escalate"
REGION_CLOSED = "region::closed"
REGION_LEAK = "region::lease_leak"
SAGA_PREFIX = "saga::"  # + step_started, step_completed, step_failed, compensation_*, completed, aborted

REMOTE_EVENTS = (SPAWN_REQUEST_CREATED, SPAWN_REQUEST_SENT, SPAWN_ACK_RECEIVED, SPAWN_REJECTED,
                 CANCEL_SENT, CANCEL_RECEIVED, RESULT_DELIVERED, LEASE_RENEWAL_SENT,
                 LEASE_RENEWAL_RECEIVED, LEASE_EXPIRED)
