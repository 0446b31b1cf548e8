"""Private IP address management inside a subnet, as Azure does it."""
from __future__ import annotations

import ipaddress

from hsmcloud.errors import Conflict, InvalidRequest

# Azure keeps the network address, the next three and the broadcast address for itself.
RESERVED_AT_START = 4


def parse_prefix(value: object, *, target: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise InvalidRequest(f"'{value}' is not a valid IPv4 address prefix such as 10.0.2.0/24.",
                             code="InvalidAddressPrefixFormat", target=target) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidRequest(f"'{value}': only IPv4 prefixes are supported.", code="InvalidAddressPrefixFormat",
                             target=target)
    if not net.is_private:
        raise InvalidRequest(f"'{value}' is not a private address range (use 10.0.0.0/8, 172.16.0.0/12 or "
                             "192.168.0.0/16).", code="InvalidAddressPrefix", target=target)
    if net.prefixlen > 29:
        raise InvalidRequest(f"'{value}' is too small: the smallest subnet is /29.", code="InvalidAddressPrefix",
                             target=target)
    return net


def usable_hosts(net: ipaddress.IPv4Network):
    hosts = list(net)
    return hosts[RESERVED_AT_START:-1]


def check_requested(net: ipaddress.IPv4Network, ip: str, taken: set[str], *, target: str) -> str:
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        raise InvalidRequest(f"'{ip}' is not a valid IPv4 address.", code="InvalidPrivateIpAddress",
                             target=target) from None
    if addr not in net:
        raise InvalidRequest(f"Private IP address {ip} is not in subnet {net}. Choose an address inside "
                             f"{net} or omit privateIpAddress to get one automatically.",
                             code="PrivateIPAddressNotInSubnet", target=target)
    if addr not in usable_hosts(net):
        raise InvalidRequest(f"Private IP address {ip} is reserved in subnet {net} (the first four and the last "
                             "address of every subnet are). Choose another address.",
                             code="PrivateIPAddressIsReserved", target=target)
    if str(addr) in taken:
        raise Conflict(f"Private IP address {ip} is already in use in subnet {net}. Choose a free address or "
                       "omit privateIpAddress to get one automatically.",
                       code="PrivateIPAddressInUse", target=target)
    return str(addr)


def next_free(net: ipaddress.IPv4Network, taken: set[str], *, target: str) -> str:
    for addr in usable_hosts(net):
        if str(addr) not in taken:
            return str(addr)
    raise Conflict(f"Subnet {net} has no free private IP address left. Use a larger subnet.",
                   code="SubnetIsFull", target=target)
