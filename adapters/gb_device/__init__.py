"""GB/T 28181 devices (IPC, NVR, lower platforms).

    registrar.py     REGISTER admission, sans-IO: (request, peer, now) → Challenge | Refuse | Accept
    scanned.py       a plain REGISTER with credentials decided from the header scan, sans-IO (main and SIP workers)
    catalog_sync.py  post-login sync workers, catalog diff and apply, channel ownership
    queries.py       MANSCDP queries out, Response MESSAGEs matched back by SN
    device.py        the shell: REGISTER verdicts carried out, MESSAGE/NOTIFY, presence → health
"""

from adapters.gb_device.catalog_sync import CatalogSync
from adapters.gb_device.device import DeviceSettings, GbDeviceAdapter, gb_date
from adapters.gb_device.queries import Queries, QueryFailed
from adapters.gb_device.registrar import Accept, Challenge, Check, Refuse, Registrar, RegistrarSettings

__all__ = [
    "Accept",
    "CatalogSync",
    "Challenge",
    "Check",
    "DeviceSettings",
    "GbDeviceAdapter",
    "Queries",
    "QueryFailed",
    "Refuse",
    "Registrar",
    "RegistrarSettings",
    "gb_date",
]
