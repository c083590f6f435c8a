"""One call's RTP media on asyncio (interface fixed by the lead; the media work fills it in).

Why not pyVoIP's media: three threads per call, sleep-paced sending that drifts, blocking
reads that drop silence and 0x00-filled losses (../shared/PYVOIP.md items 4 and 8). Here all
calls share one 20 ms ticker with absolute deadlines (../shared/MEDIA.md).

Contract used by the call layer (ivr/call.py):

    ticker = Ticker()                    # ivr/media/ticker.py; one per process, started by the IVR
    await ticker.start(); await ticker.stop()
    session = await MediaSession.open(host, (port_min, port_max), ticker=ticker,
                                      payload_type=0|8, dtmf_payload_type=101|None)
    session.local_port: int
    session.set_remote((host, port))     # from the SDP; latches to the real source of the first packet
    await session.play(pcm: bytes, *, interrupt_on_digit: bool = False) -> str | None
        # pcm = 16-bit little-endian mono 8 kHz linear audio; sent as 20 ms frames on the ticker,
        # silence (the codec's silence byte) sent when nothing is playing so NAT/peers see a stream.
        # Returns the digit that interrupted it (and leaves that digit in `digits`), else None.
    session.start_recording(sink: Callable[[bytes], None])
        # sink gets 320-byte (20 ms, 16-bit 8 kHz) frames in sequence order, reordered, duplicates
        # dropped, gaps filled with silence so duration == wall time; also called with silence while
        # no RTP arrives at all (so a caller who sends nothing records as silence, not as nothing).
    session.stop_recording()
    session.digits: asyncio.Queue[str]   # RFC 4733 telephone-events, one per key press
    session.last_rx: float | None        # loop.time() of the last RTP packet received
    session.stats -> dict                # packets in/out, lost, late, duplicates, bad packets
    await session.close()
"""
