#!/usr/bin/env python3
"""Writes the seed corpus of the dns_request fuzz target into seeds/.

One real query per kind of name muster answers, built with dnspython, so
that libFuzzer starts from packets that reach the answer logic. The names
match the directory of fuzz_targets/dns_request.rs. Run from this directory:
    python3 gen_seeds.py
"""

import pathlib

import dns.flags
import dns.message
import dns.reversename

SEEDS = [
    # (file, name, type, EDNS payload or None)
    ("name_a", "web-1.muster.", "A", 1232),
    ("name_aaaa_no_edns", "WeB-1.Muster.", "AAAA", None),
    ("repeated_name_on_host_txt", "db.b.muster.", "TXT", 1232),
    ("service_a", "web.svc.muster.", "A", 4096),
    ("srv_by_port_name", "_http._tcp.web.svc.muster.", "SRV", 1232),
    ("srv_on_host_network", "_redis._tcp.cache.svc.muster.", "SRV", None),
    ("selection", "web.app.prod.env.sel.muster.", "A", 1232),
    ("agent_aaaa", "c.host.muster.", "AAAA", 1232),
    ("ptr_v4", dns.reversename.from_address("10.0.0.5").to_text(), "PTR", 1232),
    ("ptr_v6", dns.reversename.from_address("fd00::6").to_text(), "PTR", None),
    ("reverse_zone_soa", "10.in-addr.arpa.", "SOA", 1232),
    ("apex_any", "muster.", "ANY", 512),
    ("nxdomain", "nope.muster.", "A", 1232),
    ("outside_zone", "example.com.", "A", 1232),
]


def main():
    out = pathlib.Path(__file__).parent / "seeds"
    out.mkdir(exist_ok=True)
    for i, (file, name, rtype, payload) in enumerate(SEEDS):
        query = dns.message.make_query(
            name,
            rtype,
            use_edns=payload is not None,
            payload=payload or 512,
            want_dnssec=payload == 4096,
        )
        query.id = 0x1000 + i
        (out / f"{file}.bin").write_bytes(query.to_wire())


if __name__ == "__main__":
    main()
