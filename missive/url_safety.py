"""Which URLs Missive may send to: http(s) only, and never into the network it runs in.

A webhook URL is chosen by whoever holds an API key, and Missive POSTs to it from inside
the operator's network. Without a check, `http://169.254.169.254/...` (cloud metadata),
`http://127.0.0.1:5432/` or `http://10.0.0.7/admin` would let a tenant make Missive talk
to machines it should not. So:

- the scheme is http or https;
- a literal IP address, or every address a host name resolves to, must not be loopback,
  private (RFC 1918, fc00::/7), link-local (169.254/16 with the metadata services,
  fe80::/10), shared CGNAT space (100.64/10), unspecified, multicast, documentation or
  otherwise reserved, and IPv6 forms carrying an IPv4 address (mapped ::ffff:a.b.c.d,
  NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by that IPv4 address;
- names that can only be internal (`localhost`, `*.internal` such as
  `metadata.google.internal`, `*.local`, single-label names...) are refused without a
  DNS lookup;
- numeric host spellings other than dotted-quad IPv4 (`2130706433`, `0x7f000001`,
  `0177.0.0.1`, `127.1`) are always refused: resolvers read them as addresses, while
  URL parsers and people read them differently.

`MISSIVE_ALLOW_PRIVATE_URLS=true` turns the address and name checks off (a developer's
machine, `make run`); `MISSIVE_ALLOWED_URL_NETWORKS` allows chosen networks while the rest
stay refused. `check_url` is the check without DNS, used where URLs are accepted; the
webhook sender (missive/url_guard.py) adds resolution at send time.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from missive.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST = re.compile(r"^[a-z0-9._\-]+$|^[0-9a-f:.]+$")

# Ranges refused, most specific first within each family, with what they are.
_REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), kind)
    for net, kind in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private"),
        ("::/8", "reserved"),
        ("100::/64", "reserved"),
        ("2001::/23", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Names that only mean something inside a network. Cloud metadata names are among them:
# metadata.google.internal, instance-data.ec2.internal, metadata (single label)...
_INTERNAL_NAMES = frozenset({"localhost", "metadata.goog", "metadata.tencentyun.com"})
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".intranet", ".lan")


class UnsafeUrl(ValueError):
    """A URL Missive will not send to; the message says why."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if ip.version == 4:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_kind(ip: IPAddress) -> str | None:
    """What makes an address internal ("loopback", "private"...), or None for a public one."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        return address_kind(inner)
    for network, kind in _REFUSED:
        if ip.version == network.version and ip in network:
            return kind
    return None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`MISSIVE_ALLOWED_URL_NETWORKS`: CIDRs or addresses, separated by commas or spaces."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in re.split(r"[\s,]+", text.strip()) if item)


def literal_ip(host: str) -> IPAddress | None:
    """The address of a host written as an IP literal; None for a name.

    Raises UnsafeUrl for numeric spellings a resolver would take as an IPv4 address but
    that are not dotted quads (inet_aton reads decimal, hex, octal and short forms), and
    for names whose last label is a number, which no public DNS name has.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    numeric = host.rsplit(".", 1)[-1].isdigit()
    if not numeric:
        try:
            socket.inet_aton(host)
            numeric = True
        except OSError:
            pass
    if numeric:
        raise UnsafeUrl(f"must name its host, or give a dotted-quad or IPv6 address, not {host}")
    return None


def internal_name(host: str) -> bool:
    """Names that resolve only inside a network: localhost, *.internal, single labels..."""
    host = host.rstrip(".")
    return "." not in host or host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES)


@dataclass(frozen=True)
class UrlPolicy:
    """Whether internal addresses are allowed, and which networks are allowed anyway."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def refusal(self, ip: IPAddress) -> str | None:
        """Why this address may not be sent to, or None when it may."""
        if self.allow_private:
            return None
        inner = embedded_ipv4(ip)
        for network in self.allowed_networks:
            if (ip.version == network.version and ip in network) or (inner is not None and inner in network):
                return None
        kind = address_kind(ip)
        if kind is None:
            return None
        shown = f"{ip} (IPv4 {inner})" if inner is not None else str(ip)
        return f"{shown} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} address"

    def check(self, url: str) -> tuple[str, IPAddress | None]:
        """(host, its address when a literal) of a URL Missive may send to; UnsafeUrl with
        the reason otherwise. No DNS: a host name is refused only when obviously internal."""
        host = _host_of(url)
        ip = literal_ip(host)
        if ip is not None:
            reason = self.refusal(ip)
            if reason:
                raise UnsafeUrl(f"must not point into a private network: {reason}")
        elif not self.allow_private and internal_name(host):
            raise UnsafeUrl(f"must not point into a private network: {host} is an internal host name")
        return host, ip


def _host_of(url: str) -> str:
    """The host of an absolute http(s) URL with a valid port and no whitespace."""
    try:
        if any(ch.isspace() or ord(ch) < 32 for ch in url):
            raise ValueError
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when out of range
        host = parts.hostname or ""
    except ValueError:
        raise UnsafeUrl("must be an absolute http or https URL") from None
    if parts.scheme not in ("http", "https") or not _HOST.match(host):
        raise UnsafeUrl("must be an absolute http or https URL")
    return host


STRICT = UrlPolicy()
# Scheme and shape only, for URLs Missive never requests (the sandbox's simulated users).
SHAPE_ONLY = UrlPolicy(allow_private=True)


def check_url(url: str, policy: UrlPolicy = STRICT) -> str:
    """The URL itself when Missive may send to it (no DNS); UnsafeUrl otherwise."""
    policy.check(url)
    return url


@lru_cache(maxsize=8)
def _policy(allow_private: bool, networks: str) -> UrlPolicy:
    return UrlPolicy(allow_private, parse_networks(networks))


def policy_for(settings: Settings) -> UrlPolicy:
    return _policy(settings.allow_private_urls, settings.allowed_url_networks)
