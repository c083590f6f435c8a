"""One SIP dialog (RFC 3261 section 12), from the UAS side (`from_invite`) or the UAC side (`from_response`).

Our BYE must carry the dialog the caller knows: our To-tag as its From tag, its From as
To, the Call-ID, a CSeq above any we sent, the caller's Contact as Request-URI and the
Record-Route set as Route, and it goes to the first route or the Contact, never to a fixed
registrar (pyVoIP's BYE goes to its registrar, PYVOIP.md item 1). Pure: no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivr.sip.message import Request, Response, SipParseError, build_request, parse_name_addr, parse_uri, split_header_list


@dataclass
class Dialog:
    """Identifiers and routing of one dialog, as the UAS that answered the INVITE sees it."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_party: str
    """The INVITE's To value with our tag: the From of our requests."""
    remote_party: str
    """The INVITE's From value as received: the To of our requests."""
    remote_target: str
    """The caller's Contact URI: Request-URI of our in-dialog requests (12.1.1)."""
    route_set: list[str] = field(default_factory=list)
    """Record-Route entries in the order received, as `<uri>` (12.1.1: the UAS keeps the order)."""
    remote_cseq: int = 0
    local_cseq: int = 0

    @classmethod
    def from_invite(cls, invite: Request, local_tag: str) -> Dialog:
        contacts = invite.headers.get("Contact")
        # RFC 2543 made Contact optional (RFC 4475 3.4.1): then the From URI is the only target.
        target = parse_name_addr(split_header_list(contacts)[0]).uri if contacts else invite.from_addr.uri
        routes = [
            _route_entry(entry) for value in invite.headers.get_all("Record-Route") for entry in split_header_list(value)
        ]
        to = invite.headers.get("To") or ""
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_addr.tag,
            local_party=f"{to};tag={local_tag}",
            remote_party=invite.headers.get("From") or "",
            remote_target=target,
            route_set=routes,
            remote_cseq=invite.cseq.number,
        )

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """The dialog our INVITE created with this 2xx (12.1.2): route set is Record-Route REVERSED."""
        tag = response.to_addr.tag
        if not tag:
            raise SipParseError("2xx to INVITE without a To tag")
        contacts = response.headers.get("Contact")
        if not contacts:
            raise SipParseError("2xx to INVITE without Contact")
        target = parse_name_addr(split_header_list(contacts)[0]).uri
        parse_uri(target)
        routes = [
            _route_entry(entry) for value in response.headers.get_all("Record-Route") for entry in split_header_list(value)
        ]
        local_tag = invite.from_addr.tag or ""
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=tag,
            local_party=invite.headers.get("From") or "",
            remote_party=response.headers.get("To") or "",
            remote_target=target,
            route_set=routes[::-1],
            local_cseq=invite.cseq.number,
        )

    @property
    def key(self) -> tuple[str, str | None, str]:
        """How the server finds this dialog for a request from the peer: (Call-ID, its From tag, its To tag)."""
        return (self.call_id, self.remote_tag, self.local_tag)

    def matches(self, request: Request) -> bool:
        return (
            request.call_id == self.call_id
            and request.to_addr.tag == self.local_tag
            and request.from_addr.tag == self.remote_tag
        )

    def request(self, method: str, *, via_host: str, via_port: int, contact: str | None = None,
                cseq: int | None = None) -> tuple[Request, str]:
        """Build the next in-dialog request and return it with the URI to send it to (12.2.1.1).

        `cseq` is for the ACK of a 2xx, which repeats the INVITE's number (13.2.2.4)
        instead of taking the next one.
        """
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri, routes, next_hop = self._routing()
        request = build_request(
            method,
            uri,
            from_=self.local_party,
            to=self.remote_party,
            call_id=self.call_id,
            cseq=cseq,
            via_host=via_host,
            via_port=via_port,
            contact=contact,
            headers=[("Route", r) for r in routes],
        )
        return request, next_hop

    def _routing(self) -> tuple[str, list[str], str]:
        """Request-URI, Route values and next hop: loose routing with `lr`, else the strict form."""
        if not self.route_set:
            return self.remote_target, [], self.remote_target
        first = parse_name_addr(self.route_set[0]).uri
        if "lr" in parse_uri(first).params:
            return self.remote_target, list(self.route_set), first
        return first, [*self.route_set[1:], f"<{self.remote_target}>"], first


def _route_entry(entry: str) -> str:
    """A Record-Route entry kept as `<uri>` with its header parameters, checked once here."""
    parse_name_addr(entry)
    return entry.strip()


def next_hop_address(uri: str) -> tuple[str, int]:
    """Host and port to send to for a SIP URI (maddr wins; default port 5060; no SRV lookup)."""
    parsed = parse_uri(uri)
    host = parsed.params.get("maddr") or parsed.host
    return host.strip("[]"), parsed.port or 5060
