"""A TCP proxy in front of a redis-server that holds back, once, the answer to the first request
carrying a given text, as a congested network would: the client's read times out after Redis
ran the command, so the client sends it again (tests only).

    python -m tests.slow_redis_proxy LISTEN_PORT UPSTREAM_PORT TEXT SECONDS

Prints ``ready`` once it listens, ``seen N`` each time a request carries TEXT (only the first
one's answer is held, SECONDS long) and ``released`` when that answer was passed on (to a
client that has usually given up by then).
"""

from __future__ import annotations

import asyncio
import sys


class Proxy:
    def __init__(self, upstream_port: int, text: bytes, seconds: float) -> None:
        self.upstream_port = upstream_port
        self.text = text
        self.seconds = seconds
        self.seen = 0

    async def serve(self, client_in: asyncio.StreamReader,
                    client_out: asyncio.StreamWriter) -> None:
        upstream_in, upstream_out = await asyncio.open_connection("127.0.0.1",
                                                                  self.upstream_port)
        hold = asyncio.Event()  # set: the next answer on this connection is held back
        tasks = [asyncio.create_task(self._requests(client_in, upstream_out, hold)),
                 asyncio.create_task(self._answers(upstream_in, client_out, hold))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_out, upstream_out):
            writer.close()

    async def _requests(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                        hold: asyncio.Event) -> None:
        tail = b""
        while chunk := await source.read(65536):
            if self.text in tail + chunk:
                self.seen += 1
                say(f"seen {self.seen}")
                if self.seen == 1:
                    hold.set()
            tail = chunk[-len(self.text):]
            sink.write(chunk)
            await sink.drain()

    async def _answers(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                       hold: asyncio.Event) -> None:
        while chunk := await source.read(65536):
            if hold.is_set():
                hold.clear()
                await asyncio.sleep(self.seconds)
                say("released")
            sink.write(chunk)
            await sink.drain()


def say(line: str) -> None:
    print(line, flush=True)


async def main(listen_port: int, upstream_port: int, text: str, seconds: float) -> None:
    proxy = Proxy(upstream_port, text.encode(), seconds)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", listen_port)
    say("ready")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    port, upstream, pattern, hold_for = sys.argv[1:5]
    asyncio.run(main(int(port), int(upstream), pattern, float(hold_for)))
