"""Character sets of MANSCDP bodies (our notes §4.2).

Devices declare GB2312 (most), UTF-8 (some firmwares, many platforms) or nothing, and
the declaration is not always true. GB2312/GBK/GB18030 are all decoded with `gb18030`
(a superset). pyexpat refuses multi-byte declarations on bytes input, so bodies are
always decoded to `str` here before any XML parser sees them.
"""

import re

from gateway.gb.errors import GbError

_DECL = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9_.:\-]+)[\"']", re.IGNORECASE)
_BOM = b"\xef\xbb\xbf"
_GB_NAMES = frozenset({"gb2312", "gbk", "gb18030", "cp936", "euc-cn", "euccn", "x-gbk", "gb_2312-80"})
_UTF8_NAMES = frozenset({"utf-8", "utf8"})

GB18030 = "gb18030"
UTF8 = "utf-8"


def codec_for(charset: str) -> str | None:
    """Python codec for a declared/configured charset name, or None if not GB/UTF-8."""
    name = charset.strip().lower().replace("_", "-") if charset else ""
    if name in _GB_NAMES or name.startswith("gb"):
        return GB18030
    if name in _UTF8_NAMES:
        return UTF8
    return None


def declared_charset(raw: bytes) -> str | None:
    """The `encoding=` of the XML declaration in the first 200 bytes, as written."""
    m = _DECL.search(raw[:200])
    return m.group(1).decode("ascii") if m else None


def decode_with(raw: bytes, preferred: str = GB18030, *, override: bool = False) -> tuple[str, str]:
    """Decode a body; return (text, codec used).

    Order (§4.2): declared UTF-8 → utf-8 then gb18030; declared GB → gb18030 then utf-8;
    no usable declaration → `preferred`, utf-8, gb18030. `override=True` puts `preferred`
    first regardless of the declaration (the per-device charset setting WVP keeps for
    devices whose declaration lies). Never raises: the last resort is gb18030 with
    replacement characters.
    """
    pref = codec_for(preferred) or GB18030
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
        order = [UTF8, GB18030]
    else:
        declared = declared_charset(raw)
        codec = codec_for(declared) if declared else None
        if codec == UTF8:
            order = [UTF8, GB18030]
        elif codec == GB18030:
            order = [GB18030, UTF8]
        else:
            order = [pref, UTF8, GB18030]
    if override:
        order = [pref, *order]
    for enc in dict.fromkeys(order):
        try:
            return raw.decode(enc), enc
        except UnicodeDecodeError:
            continue
    return raw.decode(GB18030, errors="replace"), GB18030


def decode_body(raw: bytes, preferred: str = GB18030) -> str:
    """Decode a MANSCDP body honouring its declaration, with the §4.2 fallbacks."""
    return decode_with(raw, preferred)[0]


def encoding_for_output(charset: str) -> tuple[str, str]:
    """(name to declare, codec to encode with) for an outgoing body.

    GB2312/GBK/GB18030 declarations are encoded with gb18030: identical bytes for
    GB2312 characters, and rarer characters still survive instead of failing.
    """
    codec = codec_for(charset)
    if codec is None:
        raise GbError(f"unsupported MANSCDP charset {charset!r} (use GB2312, GBK, GB18030 or UTF-8)")
    declared = charset.strip().upper()
    if codec == UTF8:
        declared = "UTF-8"
    return declared, codec
