"""Everything about calls: SIP/RTP adapter, media, call flows, presence, the outbound dialer."""
