"""The SIP user agent on asyncio UDP (interface fixed by the lead; the SIP work fills it in).

Contract used by the call layer (ivr/service.py):

    server = SipServer(settings: SipSettings, on_call: Callable[[IncomingCall], Awaitable[None]])
    await server.start(); server.port -> int (the bound UDP port); await server.stop()
    IncomingCall:
        call_id: str; caller: str (user part of P-Asserted-Identity, else From); caller_name: str | None
        called: str (request-URI user); remote_media: AudioChoice (ivr.sip.sdp) from the offer
        source: tuple[str, int]
        await accept(local_rtp_port: int) -> bool      # 200 OK with our SDP answer; True once ACKed,
                                                        # False if never ACKed (Timer H: call ended)
        await reject(status: int, reason: str | None = None)
        await hangup()                                 # BYE (our side ends the call)
        ended: asyncio.Event                           # set on BYE/CANCEL from the peer, Timer H, or our hangup
        end_reason: str | None                         # "caller_bye", "cancel", "no_ack", "local_bye", "shutdown"
        on_hold: bool                                  # re-INVITE put us on hold (keep the call)
"""
