"""Reading private keys from files, the one way every command takes a key.

Keys never come from the command line, where other users can read them from
the process list; a key file readable by group or others earns a warning.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount


class KeyFileError(ValueError):
    pass


def load_key_file(path: str | Path) -> LocalAccount:
    file = Path(path)
    try:
        text = file.read_text().strip()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {file}: {e.strerror}") from e
    if file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: key file {file} is readable by other users; chmod 600 it",
              file=sys.stderr)
    try:
        return Account.from_key(text if text.startswith("0x") else "0x" + text)
    except Exception as e:
        raise KeyFileError(f"{file} does not hold a hex secp256k1 private key") from e
