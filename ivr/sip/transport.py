"""The SIP UDP endpoint: datagrams in, parsed messages out, malformed requests answered statelessly.

One bad datagram must never cost other callers their calls (the issue's "Bad input"), so
this is the one place that catches: `SipParseError` becomes the status the parser chose
(400, 505, 513) built from whatever headers it could read, sent where the Via says
(RFC 3261 18.2.2, not to a registrar as pyVoIP does, PYVOIP.md item 1); a malformed
response is dropped (there is nobody to tell). Anything the handlers raise is logged with
its traceback and, for a request, answered 500, then the socket keeps serving.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable

from config.logs import get_logger
from ivr.sip.message import (
    MAX_MESSAGE_BYTES,
    Request,
    Response,
    SipParseError,
    build_response,
    is_keepalive,
    parse_message,
    parse_via,
    response_target,
)

_LOGGER = get_logger(__name__)

Address = tuple[str, int]
RequestHandler = Callable[[Request, Address], None]
ResponseHandler = Callable[[Response, Address], None]

_HEAD_END = re.compile(rb"\r?\n\r?\n")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def reply_address(request: Request, source: Address) -> Address:
    """Where a response to `request` goes: the top Via (received/rport rules), else the datagram's source.

    A Via that names a host by name with `maddr` would need DNS; answering the source
    instead is what a NATed or broken peer can still receive.
    """
    try:
        values = request.headers.get_all("Via")
        target = response_target(parse_via(values[0])[0], source) if values else source
    except SipParseError:
        return source
    return target if is_ip_literal(target[0]) else source


class SipTransport(asyncio.DatagramProtocol):
    """asyncio protocol for one SIP UDP socket; hands parsed messages to the UA, answers the rest itself."""

    def __init__(self, on_request: RequestHandler, on_response: ResponseHandler) -> None:
        self._on_request = on_request
        self._on_response = on_response
        self._transport: asyncio.DatagramTransport | None = None

    # asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # selector datagram transports are not DatagramTransport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away, or an unroutable Via address.
        _LOGGER.warning("sip.socket_error", error=str(exc))

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        source: Address = (addr[0], addr[1])
        if is_keepalive(data):
            return
        try:
            message = parse_message(data)
        except SipParseError as err:
            self._malformed(err, data, source)
            return
        try:
            if isinstance(message, Request):
                self._on_request(message, source)
            else:
                self._on_response(message, source)
        except Exception:
            _LOGGER.exception("sip.handler_failed", source=f"{source[0]}:{source[1]}", summary=_summary(message))
            if isinstance(message, Request) and message.method != "ACK":
                self.send(build_response(message, 500, source=source), reply_address(message, source))

    # sending ---------------------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        if self._transport is None:
            raise RuntimeError("SIP transport is not open")
        sock = self._transport.get_extra_info("sockname")
        return (sock[0], sock[1])

    def send(self, message: Request | Response, target: Address) -> None:
        """Send one message; a target that is not an IP literal is refused (no blocking DNS on the loop)."""
        if self._transport is None or self._transport.is_closing():
            _LOGGER.warning("sip.send_after_close", summary=_summary(message))
            return
        if not is_ip_literal(target[0]):
            _LOGGER.warning("sip.send_unresolved", target=target[0], summary=_summary(message))
            return
        _LOGGER.debug("sip.send", target=f"{target[0]}:{target[1]}", summary=_summary(message))
        self._transport.sendto(message.to_bytes(), (target[0].strip("[]"), target[1]))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # malformed input -------------------------------------------------------------------------

    def _malformed(self, err: SipParseError, data: bytes, source: Address) -> None:
        partial = err.partial if err.partial is not None else _oversize_partial(err, data)
        log = _LOGGER.bind(source=f"{source[0]}:{source[1]}", status=err.status, reason=err.reason, size=len(data))
        if not isinstance(partial, Request) or partial.method == "ACK":
            # Responses and ACKs are never answered; unreadable framing leaves nobody to answer.
            log.warning("sip.malformed_dropped", kind=type(partial).__name__ if partial else "unreadable")
            return
        if partial.headers.get("Via") is None:
            log.warning("sip.malformed_dropped", kind="request without Via")
            return
        response = build_response(partial, err.status, source=source)
        log.warning("sip.malformed_rejected", method=partial.method)
        self.send(response, reply_address(partial, source))


def _oversize_partial(err: SipParseError, data: bytes) -> Request | Response | None:
    """For a datagram refused for size (513), read just its headers so the 513 can still reach the sender."""
    if err.status != 513:
        return None
    end = _HEAD_END.search(data, 0, MAX_MESSAGE_BYTES)
    head = data[: end.start()] if end else data[: MAX_MESSAGE_BYTES - 4].rsplit(b"\n", 1)[0].rstrip(b"\r")
    try:
        return parse_message(head + b"\r\nContent-Length: 0\r\n\r\n")
    except SipParseError as inner:
        return inner.partial


def _summary(message: Request | Response) -> str:
    if isinstance(message, Request):
        return f"{message.method} {message.uri[:80]} call-id={message.call_id[:60]}"
    return f"{message.status} {message.reason[:40]} call-id={message.call_id[:60]}"


async def open_transport(host: str, port: int, on_request: RequestHandler, on_response: ResponseHandler) -> SipTransport:
    """Bind the UDP socket (port 0 = any free port) and return the protocol serving it."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: SipTransport(on_request, on_response), local_addr=(host, port)
    )
    return protocol
