"""Every Redis key and channel tapedeck uses, built here and nowhere else."""
from __future__ import annotations

PREFIX = "tapedeck"


def recording_prefix() -> str:
    """What recording(id) starts with: Lua scripts append an id they read from Redis (the room's current one)."""
    return f"{PREFIX}:rec:"


def recording(recording_id: str) -> str:
    """Hash: the recording's state, timestamps, progress and JSON fields."""
    return f"{recording_prefix()}{recording_id}"


def recording_keys_pattern(recording_id: str) -> str:
    """SCAN pattern of every per-recording key under recording(id) (streams, chunks, stats, events, leases…)."""
    return f"{recording(recording_id)}:*"


def upload_sessions_pattern(recording_id: str) -> str:
    """SCAN pattern of the recording's resumable-upload sessions (see upload_session)."""
    return f"{PREFIX}:upload:{recording_id}:*"


def all_upload_sessions_pattern() -> str:
    """SCAN pattern of every recording's upload sessions: upload_session(id, key) = this prefix + "<id>:<key>"."""
    return f"{PREFIX}:upload:*"


def upload_session_parts(name: str) -> tuple[str, str] | None:
    """(recording id, object key) of an upload_session key, or None for another key (ids never hold ':')."""
    head = f"{PREFIX}:upload:"
    if not name.startswith(head) or ":" not in name[len(head):]:
        return None
    recording_id, object_key = name[len(head):].split(":", 1)
    return recording_id, object_key


def room_current(room: str) -> str:
    """String: the id of the room's latest recording."""
    return f"{PREFIX}:room:{room}:current"


def room_recordings(room: str) -> str:
    """Sorted set: every recording id of a room, scored by its start time (the listing, newest first)."""
    return f"{PREFIX}:room:{room}:recordings"


def streams(recording_id: str) -> str:
    """Set of "<participantId>/<type>" streams that have received chunks."""
    return f"{PREFIX}:rec:{recording_id}:streams"


def participants(recording_id: str) -> str:
    """Set of participant ids that have sent a chunk (counted against MAX_PARTICIPANTS)."""
    return f"{PREFIX}:rec:{recording_id}:participants"


def stream_chunks(recording_id: str, participant_id: str, stream_type: str) -> str:
    """Hash: sequence -> "<sha256> <bytes> <timestamp> <file name>" for one stream (read whole only by finalize)."""
    return f"{PREFIX}:rec:{recording_id}:chunks:{participant_id}:{stream_type}"


def stream_stats(recording_id: str, participant_id: str, stream_type: str) -> str:
    """Hash: chunks, bytes, min/max sequence, whether the lowest holds a header, and the least clock skew of one
    stream, kept at intake so a status read costs the same at 10 or 200,000 chunks."""
    return f"{stream_stats_prefix(recording_id)}{participant_id}:{stream_type}"


def stream_stats_prefix(recording_id: str) -> str:
    """What every stream_stats key of a recording starts with (a script appends "<participantId>:<type>")."""
    return f"{PREFIX}:rec:{recording_id}:stats:"


def stream_holes(recording_id: str, participant_id: str, stream_type: str) -> str:
    """Sorted set: one "<first>-<last>" member per run of missing sequences between min and max, scored by first."""
    return f"{stream_holes_prefix(recording_id)}{participant_id}:{stream_type}"


def stream_holes_prefix(recording_id: str) -> str:
    """What every stream_holes key of a recording starts with (a script appends "<participantId>:<type>")."""
    return f"{PREFIX}:rec:{recording_id}:holes:"


def stream_unreadable(recording_id: str, participant_id: str, stream_type: str) -> str:
    """Sorted set: sequences the index holds but finalize could not read from staging (reported as missing)."""
    return f"{PREFIX}:rec:{recording_id}:unreadable:{participant_id}:{stream_type}"


def events(recording_id: str) -> str:
    """Capped Redis Stream of progress events, so event streams can resume by id."""
    return f"{PREFIX}:rec:{recording_id}:events"


def events_channel(recording_id: str) -> str:
    """Pub/sub channel carrying the same events live."""
    return f"{PREFIX}:events:{recording_id}"


def finalize_lock(recording_id: str) -> str:
    """String with expiry: held by the one worker finalizing the recording."""
    return f"{PREFIX}:lock:finalize:{recording_id}"


def upload_session(recording_id: str, object_key: str) -> str:
    """String with expiry: JSON of a resumable/multipart upload's id and completed parts, so a retry resumes."""
    return f"{PREFIX}:upload:{recording_id}:{object_key}"


def pending_finalize() -> str:
    """Sorted set: recordings stopped but not yet completed/failed, scored by grace deadline."""
    return f"{PREFIX}:pending-finalize"


def active_recordings() -> str:
    """Sorted set: recordings in recording/paused state, scored by start time (beat's limits, the active gauge)."""
    return f"{PREFIX}:active"


def compaction_watermark() -> str:
    """String: the end time (ended_index score) up to which finished recordings were compacted to a summary."""
    return f"{PREFIX}:maintenance:compacted-until"


def celery_queue(name: str) -> str:
    """List: kombu's Redis transport keeps a queue's waiting messages under the queue's bare name."""
    return name


def ended_index() -> str:
    """Sorted set: completed and failed recordings scored by when they ended, for RETENTION_DAYS."""
    return f"{PREFIX}:ended"


def completed_index() -> str:
    """Sorted set: completed recordings scored by completion time, for staging cleanup."""
    return f"{PREFIX}:completed"


def event_stream_leases(recording_id: str) -> str:
    """Sorted set: lease id -> expiry (epoch seconds) of each open event stream of a recording."""
    return f"{PREFIX}:rec:{recording_id}:stream-leases"


def token_stream_leases(token_digest: str) -> str:
    """Sorted set: lease id -> expiry of each open event stream of one token (by digest, never the token)."""
    return f"{PREFIX}:token:{token_digest}:stream-leases"


def webrtc_peer(room: str, participant_id: str) -> str:
    """String with expiry: id of the one WebRTC peer (any web process) recording this participant of the room."""
    return f"{PREFIX}:webrtc:{room}:{participant_id}:peer"


def webrtc_sequence(recording_id: str, participant_id: str) -> str:
    """Counter: the last segment sequence a WebRTC peer took for this participant (INCR; under recording(id):*)."""
    return f"{recording(recording_id)}:rtc-seq:{participant_id}"


def webrtc_gaps(recording_id: str) -> str:
    """Hash: "<participantId>" -> JSON [{fromSeconds, toSeconds}] of WebRTC reconnect gaps, and
    "<participantId>:ended" -> epoch seconds when that participant's last peer stopped sending (under recording(id):*)."""
    return f"{recording(recording_id)}:rtc-gaps"


def signal_sockets(token_digest: str) -> str:
    """Sorted set: socket id -> lease expiry of each open WebRTC signalling socket of one token (by digest)."""
    return f"{PREFIX}:token:{token_digest}:signal-sockets"


def rate_limits() -> str:
    """Prefix of flask-limiter's counters (the limits library appends ':LIMITER/<room>/<sub>/<scope>/…')."""
    return f"{PREFIX}:limits"


def webhook_outbox(recording_id: str) -> str:
    """List: the recording's webhook deliveries (JSON), oldest first; outside recording(id):* so a purge keeps it."""
    return f"{PREFIX}:webhooks:{recording_id}"


def webhook_sender(recording_id: str) -> str:
    """String with TTL: held by the one sender delivering this recording's outbox, so order holds."""
    return f"{PREFIX}:webhooks:{recording_id}:sender"


def webhook_events(recording_id: str) -> str:
    """Hash: event type → 1 once that event entered the outbox, so a redelivered task never sends it twice."""
    return f"{PREFIX}:webhooks:{recording_id}:events"


def live_state(recording_id: str) -> str:
    """Hash: participant id → JSON of its live finalize state (workers/live/state.py); under recording(id):*."""
    return f"{recording(recording_id)}:live"


def live_lock(recording_id: str, participant_id: str) -> str:
    """Lock: held by the one process folding this participant's chunks into its live output."""
    return f"{recording(recording_id)}:live-lock:{participant_id}"


def live_due(recording_id: str) -> str:
    """String with TTL: set when a live step is queued, so chunks arriving meanwhile queue no other one."""
    return f"{recording(recording_id)}:live-due"


def live_consumers() -> str:
    """Sorted set: name of each worker consuming the `live` queue → when its announcement lapses (Redis server time,
    ms); the key's own TTL lapses with the last one, so a set of workers all killed with -9 leaves nothing behind."""
    return f"{PREFIX}:live-consumers"
