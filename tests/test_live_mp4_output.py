"""The live MP4 writer (workers/live/mp4_output.py) against FFmpeg's own MP4 muxer on the same packets: what
to_mp4 writes at stop from the whole recording is the reference, and the live file, built window by window with
its header inserted in front at stop, must read the same — per track every packet (timestamps, duration, size,
flags, bytes), the streams and the format as ffprobe reports them, and every moov box byte for byte except the
ones that say where the chunks lie."""
from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import av
import pytest

from storage_providers.local import _PartHasher
from tests.media import Recording, encode_webm
from workers.live.checksum import parts_checksum
from workers.live import mp4_output
from workers.live.mp4_output import LiveMp4, RawPacket, source_params
from workers.live.source import Unsupported
from workers.media import mp4_boxes as mp4
from workers.media.convert import plan_track
from workers.media.encoding import Mp4Settings

SETTINGS = Mp4Settings()
KEYINT = 60
LAYOUT_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mdat", b"free", b"stco", b"co64",
                b"stsc"}
"""Boxes that hold others, or say where the media lies (the live file interleaves in its own chunks)."""


def encoded(spec: Recording, directory: Path) -> tuple[list, list[RawPacket], list[str]]:
    """The clip transcoded as a live window's transcode does it (encoders opened for Matroska), its packets kept
    raw as the transcode hands them over."""
    source = directory / "in.webm"
    source.write_bytes(encode_webm(spec))
    packets: list[RawPacket] = []
    with av.open(str(source)) as src, av.open(str(directory / "window.mkv"), "w", format="matroska") as dst:
        streams = list(src.streams)
        sources = [source_params(s) for s in streams]
        tracks = [plan_track(dst, s, SETTINGS, keyint=KEYINT) for s in streams]
        outs = [t.out for t in tracks]
        out_packets = []
        for packet in src.demux():
            out_packets.extend(tracks[streams.index(packet.stream)].feed(packet))
        for track in tracks:
            out_packets.extend(track.flush())
        for p in out_packets:
            packets.append(RawPacket(outs.index(p.stream), p.pts, p.dts, p.duration, p.time_base, p.is_keyframe,
                                     bytes(p)))
        digests = [hashlib.sha256(bytes(o.codec_context.extradata or b"")).hexdigest() for o in outs]
    packets.sort(key=lambda p: (p.dts * p.time_base, p.track))
    return sources, packets, digests


def reference(directory: Path, packets: list[RawPacket]) -> Path:
    """What to_mp4 writes from these packets: the same encoders' streams, faststart."""
    target = directory / "reference.mp4"
    with av.open(str(directory / "in.webm")) as src, \
            av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        streams = [plan_track(out, s, SETTINGS, keyint=KEYINT).out for s in src.streams]
        for p in packets:
            packet = av.Packet(p.data)
            packet.pts, packet.dts, packet.duration, packet.time_base = p.pts, p.dts, p.duration, p.time_base
            packet.is_keyframe, packet.stream = p.key, streams[p.track]
            out.mux(packet)
    return target


def write_live(directory: Path, sources: list[dict], packets: list[RawPacket], digests: list[str], windows: int,
               part_size: int = mp4_output.PART_SIZE):
    live = LiveMp4(directory, "alice", part_size=part_size)
    bounds = [round(len(packets) * k / windows) for k in range(windows + 1)]
    progress = live.begin(sources, packets[:bounds[1]], SETTINGS, KEYINT, digests)
    for start, end in zip(bounds, bounds[1:]):
        progress = live.append(progress, packets[start:end])
    return live, progress


def moov_boxes(path: Path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()
    found: list[tuple[bytes, bytes]] = []

    def walk(start: int, end: int) -> None:
        for box in mp4.boxes(data, start, end):
            if box.name not in LAYOUT_BOXES:
                found.append((box.name, data[box.start:box.end]))
            if box.name in mp4.CONTAINERS:
                walk(box.body, box.end)

    walk(0, len(data))
    return found


def ffprobe(path: Path) -> dict:
    answer = subprocess.run(["ffprobe", "-v", "error", "-show_data_hash", "sha256", "-show_packets", "-show_streams",
                             "-show_format", "-of", "json", str(path)], capture_output=True, text=True, check=True)
    assert answer.stderr == ""
    data = json.loads(answer.stdout)
    per_track: dict[int, list] = {}
    for p in data["packets"]:
        per_track.setdefault(p["stream_index"], []).append(
            (p.get("pts"), p.get("dts"), p.get("duration"), p["size"], p["flags"], p["data_hash"]))
    fmt = {k: v for k, v in data["format"].items() if k not in ("filename", "size", "bit_rate")}
    return {"packets": per_track, "streams": data["streams"], "format": fmt}


def top_level(path: Path) -> list[bytes]:
    return [box.name for box in mp4.boxes(path.read_bytes())]


@pytest.mark.parametrize("seconds,windows,tracks", [(2.5, 1, "both"), (9, 4, "both"), (31, 7, "both"),
                                                    (6, 3, "audio"), (6, 3, "video")])
def test_the_live_mp4_reads_as_the_muxers_own(tmp_path, seconds, windows, tracks):
    spec = Recording(seconds=seconds, keyframe_seconds=3.0, video=tracks != "audio", audio=tracks != "video")
    sources, packets, digests = encoded(spec, tmp_path)
    live, progress = write_live(tmp_path, sources, packets, digests, windows)
    closed = live.close(progress, SETTINGS, KEYINT, digests)
    expected = reference(tmp_path, packets)
    assert top_level(closed.path) == [b"ftyp", b"moov", b"free", b"mdat"]  # faststart
    assert closed.header % mp4_output.BLOCK == 0 and closed.bytes == closed.path.stat().st_size
    ours, theirs = ffprobe(closed.path), ffprobe(expected)
    assert ours["packets"] == theirs["packets"] and len(ours["packets"]) == (2 if tracks == "both" else 1)
    if tracks != "audio":
        assert len(ours["packets"][len(ours["packets"]) - 1]) == round(seconds * 30)
    assert ours["streams"] == theirs["streams"]
    assert ours["format"] == theirs["format"]
    assert moov_boxes(closed.path) == moov_boxes(expected)
    with av.open(str(closed.path)) as check:  # what the status reports, read without opening the file again
        assert closed.duration_seconds == check.duration / av.time_base
        assert closed.streams == [(s.type, s.codec_context.name) for s in check.streams]


def test_closing_twice_gives_the_same_file(tmp_path):
    """A finalize retried after the header went in (a worker killed before the upload) writes it again, once, and
    hashes the parts where the body now lies."""
    sources, packets, digests = encoded(Recording(seconds=4), tmp_path)
    live, progress = write_live(tmp_path, sources, packets, digests, 2, part_size=16 * 1024)
    closed = live.close(progress, SETTINGS, KEYINT, digests)
    first = closed.path.read_bytes()
    again = live.close(progress, SETTINGS, KEYINT, digests)
    assert again.path.read_bytes() == first
    assert again.checksum == closed.checksum == parts_checksum(again.path, live.part_size, again.header)


def test_a_window_appended_again_after_a_crash_is_appended_once(tmp_path):
    """The step died after the append but before the state was saved: the redo starts from the saved progress."""
    sources, packets, digests = encoded(Recording(seconds=6), tmp_path)
    live = LiveMp4(tmp_path, "alice")
    half = len(packets) // 2
    progress = live.begin(sources, packets[:half], SETTINGS, KEYINT, digests)
    saved = live.append(progress, packets[:half])
    live.append(saved, packets[half:])  # lost: the state never recorded it
    progress = live.append(saved, packets[half:])
    closed = live.close(progress, SETTINGS, KEYINT, digests)
    assert ffprobe(closed.path)["packets"] == ffprobe(reference(tmp_path, packets))["packets"]


def test_without_block_insertion_the_body_is_copied_behind_the_header(tmp_path, monkeypatch):
    """Filesystems without FALLOC_FL_INSERT_RANGE (tmpfs, NFS): the same file, by one copy."""
    sources, packets, digests = encoded(Recording(seconds=4), tmp_path)
    live, progress = write_live(tmp_path, sources, packets, digests, 2)
    monkeypatch.setattr(mp4_output, "FALLOC_FL_INSERT_RANGE", 0x7F00)  # a mode no kernel knows: EOPNOTSUPP/EINVAL
    closed = live.close(progress, SETTINGS, KEYINT, digests)
    assert ffprobe(closed.path)["packets"] == ffprobe(reference(tmp_path, packets))["packets"]


def test_decode_times_that_go_back_are_refused(tmp_path):
    sources, packets, digests = encoded(Recording(seconds=3), tmp_path)
    live = LiveMp4(tmp_path, "alice")
    progress = live.begin(sources, packets, SETTINGS, KEYINT, digests)
    progress = live.append(progress, packets[10:])
    with pytest.raises(Unsupported, match="decode times"):
        live.append(progress, packets[:10])


def test_other_encoder_parameters_are_refused(tmp_path):
    """The header's sample descriptions come from encoders opened at stop: they must be the windows' own."""
    sources, packets, digests = encoded(Recording(seconds=3), tmp_path)
    live = LiveMp4(tmp_path, "alice")
    with pytest.raises(Unsupported, match="codec parameters"):
        live.begin(sources, packets, replace(SETTINGS, video_crf=30), KEYINT, digests[::-1])


def test_part_checksums_hashed_while_recording_match_the_finished_file(tmp_path):
    """Parts 2, 3, ... are the body's parts, hashed as they complete; the first holds the header too. A reader
    recomputes the same composite from the bytes, given the first part's size (the manifest's firstPartSize), and
    so does the local store's check of a copy."""
    sources, packets, digests = encoded(Recording(seconds=9, keyframe_seconds=3.0), tmp_path)
    live = LiveMp4(tmp_path, "alice", part_size=16 * 1024)
    bounds = [0, len(packets) // 3, 2 * len(packets) // 3, len(packets)]
    progress = live.begin(sources, packets[:bounds[1]], SETTINGS, KEYINT, digests)
    for start, end in zip(bounds, bounds[1:]):
        progress = live.append(progress, packets[start:end])
    assert len(live.parts.read_bytes()) // 32 == progress.body // (16 * 1024)  # hashed while recording
    closed = live.close(progress, SETTINGS, KEYINT, digests)
    checksum = closed.checksum
    recomputed = parts_checksum(closed.path, 16 * 1024, closed.header)
    assert checksum == recomputed and len(checksum.digests) > 5
    assert checksum.to_json()["firstPartSize"] == closed.header + 16 * 1024
    hasher = _PartHasher.expecting({"sha256-parts": checksum.metadata()})
    data = closed.path.read_bytes()
    for at in range(0, len(data), 10_000):
        hasher.update(data[at:at + 10_000])
    assert hasher.composite() == hasher.expected == checksum.composite


@pytest.mark.parametrize("then", ["append", "close"])
def test_a_state_saved_before_stsc_was_kept_still_closes_right(tmp_path, then):
    """A worker upgraded mid-recording: the saved state has no stsc count and there is no stsc file. The table is
    written once from the chunk table, by the next append or at stop."""
    sources, packets, digests = encoded(Recording(seconds=9, keyframe_seconds=3.0), tmp_path)
    live = LiveMp4(tmp_path, "alice")
    half = len(packets) // 2
    progress = live.begin(sources, packets[:half], SETTINGS, KEYINT, digests)
    progress = live.append(progress, packets[:half])
    saved = progress.to_json()
    saved["tracks"] = [track[:13] for track in saved["tracks"]]  # the state's shape before
    for index in range(len(progress.tracks)):
        live.table(index, "stsc").unlink()
    progress = mp4_output.Mp4Progress.from_json(saved)
    if then == "append":
        progress = live.append(progress, packets[half:])
        assert all(track.stsc_entries for track in progress.tracks)
        expected = packets
    else:
        expected = packets[:half]
    closed = live.close(progress, SETTINGS, KEYINT, digests)
    assert ffprobe(closed.path)["packets"] == ffprobe(reference(tmp_path, expected))["packets"]
    assert moov_boxes(closed.path) == moov_boxes(reference(tmp_path, expected))
