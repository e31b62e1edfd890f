"""Server-side WebRTC ingest (README "WebRTC ingest"): no Flask here; app/routes/signal.py is the thin edge.

messages.py    signalling messages, validated        signalling.py  one socket's conversation and its bounds
peers.py       peer connections, rooms followed      recorder.py    forwarded frames → numbered WebM segments
forwarding.py  every use of aiortc internals         claims.py      one recording peer per participant, gaps
loop.py        the media and io threads' loops       config.py      RTC_* settings
sockets.py     signalling sockets per token
"""
