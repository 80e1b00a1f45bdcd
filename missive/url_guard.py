"""The send-time half of the outbound URL check (missive/url_safety.py): the webhook
sender's POSTs and the Viber channel's HEADs of media.

The API checked a URL when it was given, without DNS. At send time, every request:

- repeats that check (`refusal`: a dict lookup per URL seen before), which alone decides
  URLs whose host is a literal IP — aiohttp connects to those without any resolver;
- resolves host names through `GuardedResolver`, the connector's only resolver: each
  address a name resolves to is checked, and a name with any refused address is refused
  whole. The connection goes to the addresses returned, so a DNS answer that changes
  between the check and the connect (DNS rebinding) cannot swap in another address.

Answers, refusals included, are kept `ttl` seconds per host, and concurrent lookups of a
host share one `getaddrinfo`. DNS failures are not kept: the attempt fails and is retried.
`guarded_session` is an aiohttp session wired so; redirects are the caller's to handle
(`head_length` re-checks each hop).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from missive.url_safety import UnsafeUrl, UrlPolicy

# Bounds on the caches: past them a cache starts again empty (cheap, and rare).
MAX_URLS = 10_000
MAX_HOSTS = 10_000
REDIRECTS = frozenset({301, 302, 303, 307, 308})

Addresses = tuple[tuple[socket.AddressFamily, str], ...]


class RefusedAddress(OSError):
    """A host name resolving to an address Missive may not send to (an OSError, so that
    aiohttp reports it as the connection error it is)."""


class AddressGuard:
    def __init__(self, policy: UrlPolicy, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._ttl = ttl
        self._clock = clock
        # url -> why it is refused, or None when its static check passed. Static: the
        # policy does not change while the process runs.
        self._urls: dict[str, str | None] = {}
        self._hosts: dict[str, tuple[float, Addresses | str]] = {}
        self._lookups: dict[str, asyncio.Future[Addresses | str]] = {}

    def refusal(self, url: str) -> str | None:
        """Why `url` may not be sent to, judging by the URL alone (scheme, literal IP,
        internal names); None when it may, host names still to be resolved."""
        try:
            return self._urls[url]
        except KeyError:
            pass
        try:
            self._policy.check(url)
            reason = None
        except UnsafeUrl as exc:
            reason = str(exc)
        if len(self._urls) >= MAX_URLS:
            self._urls.clear()
        self._urls[url] = reason
        return reason

    async def addresses(self, host: str) -> Addresses:
        """The checked addresses of a host name; RefusedAddress when any is refused."""
        cached = self._hosts.get(host)
        if cached is None or cached[0] <= self._clock():
            lookup = self._lookups.get(host)
            if lookup is None:
                lookup = asyncio.ensure_future(self._lookup(host))
                self._lookups[host] = lookup
                lookup.add_done_callback(lambda _: self._lookups.pop(host, None))
            answer = await asyncio.shield(lookup)
        else:
            answer = cached[1]
        if isinstance(answer, str):
            raise RefusedAddress(answer)
        return answer

    async def _lookup(self, host: str) -> Addresses | str:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, None, type=socket.SOCK_STREAM, flags=getattr(socket, "AI_ADDRCONFIG", 0)
        )
        found: list[tuple[socket.AddressFamily, str]] = []
        answer: Addresses | str
        for family, _, _, _, sockaddr in infos:
            address = str(sockaddr[0])
            reason = self._policy.refusal(ipaddress.ip_address(address))
            if reason:
                answer = f"{host} resolves to {reason}"
                break
            if (family, address) not in found:
                found.append((family, address))
        else:
            answer = tuple(found)
        if len(self._hosts) >= MAX_HOSTS:
            self._hosts.clear()
        self._hosts[host] = (self._clock() + self._ttl, answer)
        return answer


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver for the webhook sender: only addresses the guard allowed."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        addresses = await self._guard.addresses(host)
        results: list[ResolveResult] = [
            {"hostname": host, "host": address, "port": port, "family": found, "proto": 0,
             "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
            for found, address in addresses
            if not family or found == family
        ]
        if not results:
            raise OSError(f"{host} has no address of family {family!r}")
        return results

    async def close(self) -> None:
        return None


def guarded_session(guard: AddressGuard, timeout: float, limit: int) -> aiohttp.ClientSession:
    """A session that connects only to addresses the guard allowed (literal-IP URLs still
    need `guard.refusal` first), within `timeout` seconds per request, body included."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout),
        connector=aiohttp.TCPConnector(
            limit=limit,
            limit_per_host=0,
            # The guard's resolver is the only one, and it keeps its own short cache.
            resolver=GuardedResolver(guard),
            use_dns_cache=False,
        ),
        # Bodies are not used: nothing a server sends is decompressed.
        auto_decompress=False,
        trust_env=False,
    )


async def head_length(session: aiohttp.ClientSession, guard: AddressGuard, url: str, hops: int = 3) -> int:
    """The Content-Length a HEAD of `url` answers, following up to `hops` redirects, each
    checked like the first URL; 0 when a URL is refused or there is no length."""
    for _ in range(hops + 1):
        if guard.refusal(url) is not None:
            return 0
        async with session.head(url, allow_redirects=False) as response:
            location = response.headers.get("Location")
            if response.status in REDIRECTS and location:
                url = str(response.url.join(URL(location)))
                continue
            if not 200 <= response.status < 300:
                return 0
            return max(0, int(response.headers.get("Content-Length", "0")))
    return 0
