"""Pure media code: containers, chunk byte streams, demux, timelines, remux, transcode, posters.

Paths and packets in, files and facts out. Nothing here knows Redis, staging or recordings, so the
batch finalize, the live muxer and the WebRTC recorder share it and it can be benchmarked alone.
"""
