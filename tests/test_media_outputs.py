"""MP4 output (transcode VP8/Opus → H.264/AAC, faststart, finalized on the `transcode` queue), posters, and the
manifest's record of both."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from tasks import celery_app
from tests.media import Recording, encode_webm, probe, seek_and_decode, slice_timeslice


def top_level_boxes(path: Path) -> list[str]:
    data, boxes, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return boxes


def test_mp4_output_transcodes_webm_with_faststart_and_poster(api, worker):
    source = encode_webm(Recording(seconds=3.0))
    response = api.start(format="mp4", metadata={"title": "weekly sync"})
    assert response.status_code == 201 and response.get_json()["format"] == "mp4"
    recording_id = response.get_json()["recordingId"]
    for sequence, piece in enumerate(slice_timeslice(source, 5)):
        assert api.put_chunk(recording_id, "alice", "video", sequence, piece).status_code == 202
    task_id = api.stop().get_json()["taskId"]
    body = api.wait_final(recording_id, timeout=90)
    assert body["state"] == "completed", body
    assert celery_app.AsyncResult(task_id).queue == "transcode"  # kept off the plain finalize queue
    [output] = body["outputs"]
    assert output["key"].endswith("/alice.mp4") and output["format"] == "mp4" and output["method"] == "transcode"
    path = api.output_path(body, "alice")
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart: playable while downloading
    got = probe(path)
    assert sorted(got.codecs) == [("audio", "aac"), ("video", "h264")]
    assert got.frames["video"] == 90
    assert abs(got.duration - 3.0) <= 0.05 and abs(got.container_duration - 3.0) <= 0.1
    assert seek_and_decode(path, 2.0) is not None

    poster = path.with_name("alice.jpg")
    assert output["thumbnailKey"].endswith("/alice.jpg") and output["thumbnail"]["width"] == 320
    assert probe(poster).codecs == [("video", "mjpeg")]
    manifest = json.loads(path.with_name("manifest.json").read_text())
    assert manifest["format"] == "mp4" and manifest["metadata"] == {"title": "weekly sync"}
    assert manifest["participants"]["alice"]["output"]["method"] == "transcode"
    assert {t["method"] for t in manifest["participants"]["alice"]["output"]["tracks"]} == {"transcode"}


def test_thumbnail_scales_to_width_and_uses_offset(tmp_path):
    from workers.media.thumbnail import make_thumbnail

    source = tmp_path / "in.webm"
    source.write_bytes(encode_webm(Recording(seconds=3.0, width=640, height=480)))
    thumb = make_thumbnail(source, tmp_path / "poster.jpg", offset_seconds=1.5, width=160)
    assert (thumb.width, thumb.height) == (160, 120) and 1.4 <= thumb.seconds <= 1.6
    with __import__("av").open(str(thumb.path)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (160, 120)
    late = make_thumbnail(source, tmp_path / "late.jpg", offset_seconds=60, width=160)
    assert 1.0 <= late.seconds <= 2.0  # past the end: the middle instead

    audio_only = tmp_path / "audio.webm"
    audio_only.write_bytes(encode_webm(Recording(seconds=1.0, video=False)))
    assert make_thumbnail(audio_only, tmp_path / "none.jpg", 1.0, 160) is None


def test_mp4_copies_h264_and_transcodes_only_the_audio(tmp_path):
    """Chromium's `video/webm;codecs=h264` gives H.264 + Opus in Matroska: copy the video, re-encode the audio."""
    import av

    from workers.media.convert import Mp4Settings, to_mp4

    source = tmp_path / "src.webm"
    source.write_bytes(encode_webm(Recording(seconds=2.0)))
    h264 = to_mp4(source, tmp_path, "h264", Mp4Settings())  # VP8/Opus → H.264/AAC
    mkv = tmp_path / "h264-opus.mkv"
    with av.open(str(h264.path)) as src, av.open(str(mkv), "w", format="matroska") as dst:
        video = dst.add_stream_from_template(src.streams.video[0])
        audio = dst.add_stream("libopus", rate=48000)
        for packet in src.demux():
            if packet.size == 0:
                continue
            if packet.stream.type == "video":
                packet.stream = video
                dst.mux(packet)
                continue
            for frame in packet.decode():
                frame.pts = None
                dst.mux(audio.encode(frame))
        dst.mux(audio.encode(None))
    result = to_mp4(mkv, tmp_path, "mixed", Mp4Settings())
    assert result.method == "mixed"
    assert {(t["kind"], t["codec"], t["method"]) for t in result.tracks} == {
        ("video", "h264", "copy"), ("audio", "aac", "transcode")}
    assert probe(result.path).frames["video"] == probe(h264.path).frames["video"]
