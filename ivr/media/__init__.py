"""Media on the wire: RTP packets and sequence tracking, G.711 codecs, RFC 4733 telephone-events.

Pure modules (struct and the standard library only, no sockets, no clock), as aiortc keeps
`rtp.py` and its codecs, so the media path can be tested with truncated and invalid
packets and reused by whatever paces the packets (pyVoIP's threads or our own asyncio path).
"""
