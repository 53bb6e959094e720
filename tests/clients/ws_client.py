"""A non-Rust WebSocket client (Python `websockets`) against rt-server.

    python ws_client.py ws://127.0.0.1:PORT

Checks: a text message sent on /ws reaches every connected client, the sender
included; /echo returns text and binary unchanged; a message over the 1 MiB
limit closes only that connection, with 1009, while another stays open.
"""
import asyncio
import sys

import websockets


async def main(base):
    async with websockets.connect(base + "/ws") as a, websockets.connect(base + "/ws") as b:
        await a.send("hello from python")
        assert await asyncio.wait_for(a.recv(), 5) == "hello from python"
        assert await asyncio.wait_for(b.recv(), 5) == "hello from python"

        async with websockets.connect(base + "/echo", max_size=None) as e:
            await e.send("text ✓")
            assert await asyncio.wait_for(e.recv(), 5) == "text ✓"
            await e.send(bytes(range(256)))
            assert await asyncio.wait_for(e.recv(), 5) == bytes(range(256))

        try:
            # The server may close while the message is still being sent.
            await b.send("x" * ((1 << 20) + 1))
            await asyncio.wait_for(b.recv(), 5)
            raise AssertionError("the oversize message did not close the connection")
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            assert code == 1009, "closed with %r, not 1009" % (code,)

        await a.send("still here")
        assert await asyncio.wait_for(a.recv(), 5) == "still here"
    print("python websockets client: broadcast, echo, 1009 on oversize: ok")


asyncio.run(main(sys.argv[1]))
