"""Asks DNS questions with dnspython and prints the replies as JSON.

Usage:
  dns_query.py SERVER PORT NAME TYPE [--tcp] [--no-edns] [--payload=N]
      one question, one JSON object
  dns_query.py SERVER PORT --batch [--tcp] [--no-edns] [--payload=N]
      reads a JSON list of [NAME, TYPE] from stdin, prints a JSON list
"""
import json
import sys

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype


def ask(server: str, port: int, name: str, rtype: str, options: list[str]) -> dict:
    payload = 1232
    for arg in options:
        if arg.startswith("--payload="):
            payload = int(arg.split("=", 1)[1])
    if "--no-edns" in options:
        query = dns.message.make_query(name, rtype, use_edns=False)
    else:
        query = dns.message.make_query(name, rtype, use_edns=0, payload=payload)
    if "--tcp" in options:
        reply = dns.query.tcp(query, server, port=port, timeout=3)
    else:
        reply = dns.query.udp(query, server, port=port, timeout=3, ignore_trailing=True)
    return {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "id_matches": reply.id == query.id,
        "flags": dns.flags.to_text(reply.flags).split(),
        "edns": reply.edns,
        "payload": reply.payload if reply.edns >= 0 else None,
        "question": [rrset.name.to_text() for rrset in reply.question],
        "answers": sorted(rd.to_text() for rrset in reply.answer for rd in rrset),
        "answer_names": sorted({rrset.name.to_text() for rrset in reply.answer}),
        "answer_types": sorted({dns.rdatatype.to_text(rrset.rdtype) for rrset in reply.answer}),
        "authority": [rd.to_text() for rrset in reply.authority for rd in rrset],
        "authority_types": [dns.rdatatype.to_text(rrset.rdtype) for rrset in reply.authority],
        "authority_names": [rrset.name.to_text() for rrset in reply.authority],
        "additional": sorted(rd.to_text() for rrset in reply.additional for rd in rrset),
    }


def main() -> None:
    server, port = sys.argv[1], int(sys.argv[2])
    if sys.argv[3] == "--batch":
        options = sys.argv[4:]
        questions = json.load(sys.stdin)
        print(json.dumps([ask(server, port, name, rtype, options) for name, rtype in questions]))
    else:
        name, rtype, options = sys.argv[3], sys.argv[4], sys.argv[5:]
        print(json.dumps(ask(server, port, name, rtype, options)))


if __name__ == "__main__":
    main()
