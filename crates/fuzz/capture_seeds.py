# Captures real chitchat datagrams between unkeyed agents through a relay
# and writes each as two seeds of the gossip_datagram target (prefix byte
# 1: raw to an unkeyed agent; 2: the message, which the target seals).
#
# Usage: agents h1 on 127.0.99.1:7946 and h2 on 127.0.99.2:7946 (joining
# h1) running; `python3 capture_seeds.py seeds/gossip_datagram 4` prints
# the relay's port first: start h3 with --join 127.0.99.9:PORT.
import socket, select, sys, time, os
front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); front.bind(("127.0.99.9", 0))
back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); back.bind(("127.0.99.9", 0))
server = ("127.0.99.2", 7946)
print(front.getsockname()[1], flush=True)
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
client = None; n = 0; end = time.time() + float(sys.argv[2])
while time.time() < end:
    r, _, _ = select.select([front, back], [], [], 0.2)
    for s in r:
        data, addr = s.recvfrom(70000)
        if s is front:
            client = addr; back.sendto(data, server)
        elif client:
            front.sendto(data, client)
        for prefix in (b"\x01", b"\x02"):
            with open(f"{out}/{n:04d}-{prefix[0]}", "wb") as f: f.write(prefix + data)
        n += 1
print(n, "datagrams", flush=True)
