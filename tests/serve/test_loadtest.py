"""The load generator's connection pool against a server that closes idle keep-alive connections."""

from __future__ import annotations

import asyncio

from effstack.serve.loadtest import _Pool, http_request


async def _closing_server(idle_s: float) -> tuple[asyncio.AbstractServer, list[int]]:
    """An HTTP/1.1 server that answers every request 200 and closes a connection idle for ``idle_s``."""
    opened = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened[0] += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle_s)
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, opened


def test_connections_the_server_closed_while_idle_are_not_blamed_on_it():
    async def main() -> tuple[list[int], int]:
        server, opened = await _closing_server(idle_s=0.1)
        port = server.sockets[0].getsockname()[1]
        request = http_request("POST", "127.0.0.1", port, "/x", b"abc")
        pool = _Pool("127.0.0.1", port, limit=8, max_idle_s=60.0)  # too old to matter: the server closes first
        try:
            first = await asyncio.gather(*(pool.send(request) for _ in range(4)))
            await asyncio.sleep(0.3)  # the server has closed all four
            second = await asyncio.gather(*(pool.send(request) for _ in range(4)))
        finally:
            pool.close()
            server.close()
            await server.wait_closed()
        return [s for s, _, _ in first + second], opened[0]

    statuses, opened = asyncio.run(main())
    assert statuses == [200] * 8
    assert opened == 8  # the four closed connections were replaced, not reused


def test_idle_connections_older_than_the_limit_are_replaced():
    async def main() -> tuple[int, int]:
        server, opened = await _closing_server(idle_s=60.0)
        port = server.sockets[0].getsockname()[1]
        request = http_request("GET", "127.0.0.1", port, "/x")
        pool = _Pool("127.0.0.1", port, limit=1, max_idle_s=0.05)
        try:
            await pool.send(request)
            await pool.send(request)  # at once: reused
            reused = opened[0]
            await asyncio.sleep(0.1)
            await pool.send(request)  # idle too long: a new connection
        finally:
            pool.close()
            server.close()
            await server.wait_closed()
        return reused, opened[0]

    assert asyncio.run(main()) == (1, 2)
