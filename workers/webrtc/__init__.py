"""Server-side WebRTC ingest: signalling messages now; peers and the segment recorder are still to come."""
