"""Steering a SO_REUSEPORT group's datagrams to the SIP workers, never to the main process.

The main process binds the SIP UDP port first (group index 0), then N workers bind it too
(indexes 1..N). The kernel's default choice hashes the 4-tuple over *every* socket of the group,
main included; this classic BPF program (SO_ATTACH_REUSEPORT_CBPF, Linux ≥ 4.5) picks
`1 + hash(source address, source port) mod N` instead, so:

- one source (a device's address and port) always reaches the same worker — its retransmissions
  meet the transaction that answered them, and its nonce comes back to the worker that issued it;
- the main process, which owns the control plane, receives nothing from the group while all
  workers are bound. While one is missing (a worker restarting), an index beyond the group makes
  the kernel fall back to its own hash over every socket, main included: main is a complete
  registrar, so nothing is refused, only served elsewhere for a moment.

Pure bytes here (`program`); `attach` is the one setsockopt.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>
_NET = -0x100000  # SKF_NET_OFF: loads relative to the network header
_AD_PROTOCOL = -0x1000  # SKF_AD_OFF + SKF_AD_PROTOCOL: skb->protocol in host order

# classic BPF opcodes (<linux/filter.h>)
_LD_W_ABS, _LD_H_ABS, _LD_H_IND, _LDX_B_MSH = 0x20, 0x28, 0x48, 0xB1
_ST, _LDX_MEM, _TAX = 0x02, 0x61, 0x07
_XOR_X, _MUL_K, _RSH_K, _MOD_K, _ADD_K = 0xAC, 0x24, 0x74, 0x94, 0x04
_JEQ_K, _RET_A = 0x15, 0x16
_ETH_P_IP = 0x0800


def _ins(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def program(workers: int) -> bytes:
    """The filter (struct sock_filter[]) choosing socket 1 + hash(src addr, src port) % workers."""
    if workers < 1:
        raise ValueError("at least one worker")
    tail = [_ins(_XOR_X), _ins(_MUL_K, 0x9E3779B1), _ins(_RSH_K, 16), _ins(_MOD_K, workers),
            _ins(_ADD_K, 1), _ins(_RET_A)]
    v4 = [_ins(_LDX_B_MSH, _NET),            # X = IPv4 header length
          _ins(_LD_H_IND, _NET),             # A = UDP source port (first half-word past the header)
          _ins(_ST, 0), _ins(_LD_W_ABS, _NET + 12), _ins(_LDX_MEM, 0),  # A = source address, X = port
          *tail]
    v6 = [_ins(_LD_H_ABS, _NET + 40), _ins(_TAX),  # X = source port (fixed 40-byte header)
          _ins(_LD_W_ABS, _NET + 20),           # A = last word of the source address
          *tail]
    head = [_ins(_LD_H_ABS, _AD_PROTOCOL), _ins(_JEQ_K, _ETH_P_IP, 0, len(v4))]
    return b"".join(head + v4 + v6)


def attach(sock: socket.socket, workers: int) -> None:
    """Install `program(workers)` on the reuseport group `sock` belongs to (OSError if refused)."""
    code = program(workers)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
