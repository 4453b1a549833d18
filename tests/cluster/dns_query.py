"""Asks one DNS question with dnspython and prints the reply as JSON.

Usage: dns_query.py SERVER PORT NAME TYPE [--tcp] [--no-edns] [--payload=N]
"""
import json
import sys

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype


def main() -> None:
    server, port, name, rtype = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    tcp = "--tcp" in sys.argv[5:]
    payload = 1232
    for arg in sys.argv[5:]:
        if arg.startswith("--payload="):
            payload = int(arg.split("=", 1)[1])
    if "--no-edns" in sys.argv[5:]:
        query = dns.message.make_query(name, rtype, use_edns=False)
    else:
        query = dns.message.make_query(name, rtype, use_edns=0, payload=payload)
    if tcp:
        reply = dns.query.tcp(query, server, port=port, timeout=3)
    else:
        reply = dns.query.udp(query, server, port=port, timeout=3, ignore_trailing=True)
    print(json.dumps({
        "rcode": dns.rcode.to_text(reply.rcode()),
        "flags": dns.flags.to_text(reply.flags).split(),
        "question": [rrset.name.to_text() for rrset in reply.question],
        "answers": sorted(rd.to_text() for rrset in reply.answer for rd in rrset),
        "answer_names": sorted({rrset.name.to_text() for rrset in reply.answer}),
        "answer_types": sorted({dns.rdatatype.to_text(rrset.rdtype) for rrset in reply.answer}),
        "authority": [rd.to_text() for rrset in reply.authority for rd in rrset],
        "authority_types": [dns.rdatatype.to_text(rrset.rdtype) for rrset in reply.authority],
        "authority_names": [rrset.name.to_text() for rrset in reply.authority],
    }))


if __name__ == "__main__":
    main()
