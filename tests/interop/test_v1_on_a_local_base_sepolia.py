"""v1 clients tried locally: a devnet with a public chain's id (84532, ``base-sepolia``).

v1 names networks (``base-sepolia``), and anvil's 31337 has no v1 name, so a v1
client could not be tried against a devnet at all. ``a402 devnet --chain-id``
(``start_anvil(chain_id=...)``) fixes that, with a loud warning, because what is
signed on such a devnet is signed for the public chain's id.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from x402.schemas import PaymentPayloadV1 as OfficialPaymentPayloadV1
from x402.schemas import PaymentRequiredV1 as OfficialPaymentRequiredV1

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.node import LOCAL_CHAIN_IDS, public_chain_id_warning, start_anvil
from a402.chain.tx import contract_at, transact
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.wire.headers import X_PAYMENT, X_PAYMENT_RESPONSE
from tests.interop.official import official_sdk_client
from tests.provider.support import PRICE_ATOMIC, paid_app
from tests.test_cli_end_to_end import A402, Stderr, running, wait_until

BASE_SEPOLIA = 84532


@pytest.mark.anvil
@pytest.mark.anyio
async def test_a_v1_sdk_client_pays_on_a_devnet_with_base_sepolias_chain_id(
    tmp_path: Path,
) -> None:
    with start_anvil(chain_id=BASE_SEPOLIA) as chain:
        manifest = deploy_dev_stack(chain)
        assert (manifest.chain_id, manifest.network) == (BASE_SEPOLIA, "eip155:84532")
        payer, pay_to = Account.create(), Account.create().address
        token = contract_at(chain, "TestUSDC", manifest.token.address)
        transact(chain, chain.accounts[0], token.functions.mint(payer.address, PRICE_ATOMIC))
        facilitator = Facilitator(chain, chain.accounts[1],
                                  SettlementStore(f"sqlite:///{tmp_path}/journal.db"))
        sdk = official_sdk_client(payer)  # registers v1 for every v1 EVM name

        with serve_in_thread(create_app(facilitator)) as facilitator_url:
            supported = httpx.get(f"{facilitator_url}/supported").json()
            assert {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"} in [
                {k: kind[k] for k in ("x402Version", "scheme", "network")}
                for kind in supported["kinds"]]
            app = paid_app(pay_to=pay_to, manifest=manifest, facilitator=facilitator_url)
            with serve_in_thread(app) as url:
                async with httpx.AsyncClient(timeout=30) as http:
                    offer = await http.get(f"{url}/weather")
                    required = OfficialPaymentRequiredV1.model_validate(offer.json(),
                                                                        strict=True)
                    assert [r.network for r in required.accepts] == ["base-sepolia"]
                    payload = await sdk.create_payment_payload(required)
                    assert isinstance(payload, OfficialPaymentPayloadV1)
                    assert payload.network == "base-sepolia"
                    header = base64.b64encode(payload.model_dump_json(
                        by_alias=True, exclude_none=True).encode()).decode()
                    paid = await http.get(f"{url}/weather", headers={X_PAYMENT: header})

        assert paid.status_code == 200, paid.text
        receipt = json.loads(base64.b64decode(paid.headers[X_PAYMENT_RESPONSE]))
        assert receipt["success"] is True and receipt["network"] == "base-sepolia"
        assert chain.w3.eth.get_transaction_receipt(receipt["transaction"])["status"] == 1
        assert token_balance(chain, manifest.token.address, payer.address) == 0
        assert token_balance(chain, manifest.token.address, pay_to) == PRICE_ATOMIC


def test_a_public_chain_id_on_a_local_node_comes_with_a_warning() -> None:
    for local in LOCAL_CHAIN_IDS:
        assert public_chain_id_warning(local) is None
    warning = public_chain_id_warning(BASE_SEPOLIA)
    assert warning is not None and "'base-sepolia'" in warning and "LOCAL" in warning
    unnamed = public_chain_id_warning(424242)
    assert unnamed is not None and "eip155:424242" in unnamed
    with pytest.raises(ValueError, match="chain id"), start_anvil(chain_id=0):
        pass


@pytest.mark.anvil
def test_a402_devnet_takes_a_chain_id_writes_it_into_the_manifest_and_warns(
    tmp_path: Path, reserve_port: Callable[[], int],
) -> None:
    manifest_path = tmp_path / "devnet.json"
    with running("devnet", "--port", str(reserve_port()), "--chain-id", str(BASE_SEPOLIA),
                 "--manifest-out", str(manifest_path)) as proc:
        err = Stderr(proc)
        wait_until(manifest_path.exists, "devnet")
        wait_until(lambda: sum("WARNING" in line for line in err.lines) >= 2, "the warnings")
        manifest = Manifest.load(manifest_path)

    assert (manifest.chain_id, manifest.network) == (BASE_SEPOLIA, "eip155:84532")
    assert "'base-sepolia' (eip155:84532)" in "".join(err.lines)

    refused = subprocess.run([A402, "devnet", "--chain-id", "0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--chain-id" in refused.stderr
