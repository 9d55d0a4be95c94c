"""python-telegram-bot's HTTP layer on aiohttp's client.

python-telegram-bot lets an application bring its own `BaseRequest`. Its default, httpx,
checks every pooled connection with a system call on each request; at broadcast rates
(hundreds of messages a second) that was most of the bot's CPU. aiohttp is already the
project's server stack and its client pools connections without that cost. Everything
above this class (building requests, parsing answers, raising RetryAfter or Forbidden)
is still python-telegram-bot's own code.

The bot's own sends (sendMessage, the two sends of a button press, editMessageText) and
getUpdates go as `call`: one JSON document, posted by this class, the answer read and its
errors raised (RetryAfter, Forbidden, BadRequest, ChatMigrated) by python-telegram-bot's
`BaseRequest.post`. What that skips is the Bot object's way there (a parameter object per
argument, defaults, camel-casing, a warning per call for a method it has a helper for) and
the answer's parsing into objects nothing reads: 6 % of the busy time under bench.updates.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from storage import jsontext


_JSON = {"Content-Type": "application/json"}


class JsonBody(RequestData):
    """A request's parameters as one JSON document (the Bot API takes application/json)."""

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        self.body = jsontext.dumps_bytes(params)


class AiohttpRequest(BaseRequest):
    """aiohttp has no timeout for writing a request; the bodies sent here are small forms
    (media go by Telegram file id), so the connect, pool and read timeouts are the ones
    that matter."""

    def __init__(self, *, connections: int = 64, read_timeout: float = 5.0, connect_timeout: float = 5.0,
                 pool_timeout: float = 1.0) -> None:
        self.connections = connections
        self._read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def call(self, base_url: str, method: str, params: dict[str, Any], *, read_timeout: float | None = None) -> Any:
        """One Bot API method (camelCase, as Telegram names it); its `result` as Telegram sent it."""
        return await self.post(f"{base_url}/{method}", JsonBody(params),
                               read_timeout=BaseRequest.DEFAULT_NONE if read_timeout is None else read_timeout)

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.connections, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.USER_AGENT})

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("AiohttpRequest is not initialized")
        read = self._read_timeout if read_timeout is BaseRequest.DEFAULT_NONE else read_timeout
        connect = self.connect_timeout if connect_timeout is BaseRequest.DEFAULT_NONE else connect_timeout
        pool = self.pool_timeout if pool_timeout is BaseRequest.DEFAULT_NONE else pool_timeout
        files = request_data.multipart_data if request_data is not None and request_data.contains_files else None
        timeout = aiohttp.ClientTimeout(sock_connect=connect, connect=None if connect is None or pool is None else connect + pool,
                                        sock_read=read)
        body: Any = None
        headers = None
        if isinstance(request_data, JsonBody):
            body, headers = request_data.body, _JSON
        elif files:
            body = _multipart(request_data, files)  # type: ignore[arg-type]
        elif request_data is not None:
            body = request_data.url_encoded_parameters().encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            async with self._session.request(method, url, data=body, headers=headers, timeout=timeout) as response:
                return response.status, await response.read()
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TimedOut() from exc
        except aiohttp.ClientError as exc:
            # The URL holds the bot token, and this message may be logged.
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {str(exc).replace(url, '<Bot API URL>')}") from exc


def _multipart(request_data: RequestData, files: dict[str, Any]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in files.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form
