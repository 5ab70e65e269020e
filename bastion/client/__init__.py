"""Bastion's embeddable client: on-device hashing, safety vouchers, message franking.

Depends only on the standard library, ``pdqhash``, ``numpy``, ``Pillow``, ``rbcl`` (libsodium's
ristretto255) and ``cryptography``; nothing of the server. Typical use in an app::

    from bastion.client import Account, Client, PData

    pdata = PData.from_bytes(blob, expected_root=PINNED_ROOT)  # fetched; root pinned in the app
    account = Account.from_json(stored)                          # one per user, kept by the app
    client = Client(pdata, "user-123", account)
    voucher = client.voucher_for_image(photo_bytes, item_id="msg-81/att-0")
    send(encrypted_message, voucher.data)                       # the voucher travels beside it
    store(account.to_json())                                     # synthetic-voucher state

The voucher is sealed for "user-123"; the platform forwards it to Bastion beside the sender it
authenticated (``{"account": ..., "voucher": ...}``), and Bastion refuses a voucher sealed for
another account than that.

The root pin is mandatory (``insecure_skip_root_pin=True`` is the only, unsafe, way around it),
and a table whose parameters are outside the client's :class:`Bounds` (t below 5, no synthetic
vouchers, a large derivative, long epochs, ...) is refused with :class:`UnsafeParamsError`, even
under the right root. See docs/e2ee.md for what each party can and cannot learn.
"""

from bastion.client.account import Account, EpochKeys
from bastion.client.franking import (
    CommittingAead,
    Franked,
    FrankingError,
    commit,
    frank,
    receive,
    verify_commitment,
)
from bastion.client.image import ImageError, ImageHash, derivative, hash_image
from bastion.client.pdata import (
    DEFAULT_BOUNDS,
    MODE_COMPACT,
    MODE_EXACT,
    MODE_NEAR,
    Bounds,
    InsecureTableWarning,
    Params,
    PData,
    PDataError,
    RootPinError,
    UnsafeParamsError,
    pdata_root,
)
from bastion.client.voucher import Client, Voucher, VoucherError, voucher_bytes

__all__ = [
    "DEFAULT_BOUNDS",
    "MODE_COMPACT",
    "MODE_EXACT",
    "MODE_NEAR",
    "Account",
    "Bounds",
    "Client",
    "CommittingAead",
    "EpochKeys",
    "Franked",
    "FrankingError",
    "ImageError",
    "ImageHash",
    "InsecureTableWarning",
    "PData",
    "PDataError",
    "Params",
    "RootPinError",
    "UnsafeParamsError",
    "Voucher",
    "VoucherError",
    "commit",
    "derivative",
    "frank",
    "hash_image",
    "pdata_root",
    "receive",
    "verify_commitment",
    "voucher_bytes",
]
