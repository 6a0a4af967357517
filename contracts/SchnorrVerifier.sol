// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {A402Message} from "./A402Message.sol";

/// @title Schnorr
/// @notice Verifies EVM-flavour secp256k1 Schnorr signatures (`a402.crypto.EVM`) with a single
///         `ecrecover`, the technique of noot/schnorr-verify.
/// @dev Scheme. Public key P = x·G given by its x-coordinate `px`; P must have even y and
///      0 < px ≤ (N-1)/2. Signature (e, s) on a 32-byte message m:
///          e = keccak256(abi.encodePacked(address(R), uint8(27), px, m)),   s = k + e·x mod N
///      where R = k·G. `ecrecover(h, v, r, σ)` returns address(r⁻¹·(σ·R' − h·G)) for the point R'
///      with x-coordinate r and parity v; with h = −s·px, v = 27, r = px, σ = −e·px it returns
///      address(s·G − e·P) = address(R). The signature is valid iff hashing that address gives e.
///      Rejected: keys out of range, s = 0 or s ≥ N (no malleable twin s + N), and a failed
///      ecrecover (address(0); without this check anyone could compute e for address(0)).
library Schnorr {
    /// @dev Order of the secp256k1 group.
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    /// @dev Largest usable key x-coordinate, (N - 1) / 2.
    uint256 internal constant HALF_N = N >> 1;
    /// @dev ecrecover's v for an even-y point; hashed into every challenge.
    uint8 internal constant KEY_PARITY = 27;

    /// @notice Whether (e, s) is a valid signature on `message` by the key with x-coordinate `px`.
    function verify(bytes32 px, bytes32 message, bytes32 e, uint256 s) internal pure returns (bool) {
        uint256 x = uint256(px);
        if (x == 0 || x > HALF_N || s == 0 || s >= N) return false;
        // s·x ≢ 0 (N is prime, both non-zero), so sp ∈ [1, N). If e·x ≡ 0 then ep = N, which
        // ecrecover rejects (its σ must be below N), and verification fails as it should.
        bytes32 sp = bytes32(N - mulmod(s, x, N));
        bytes32 ep = bytes32(N - mulmod(uint256(e), x, N));
        address nonce = ecrecover(sp, KEY_PARITY, px, ep);
        if (nonce == address(0)) return false;
        return keccak256(abi.encodePacked(nonce, KEY_PARITY, px, message)) == e;
    }
}

/// @title SchnorrVerifier
/// @notice A deployable front end to `Schnorr` and `A402Message`: verification as a call, its
///         gas, the payment message and authorization digest for this contract's domain, and a
///         reference settlement step (`acceptPayment`) whose calldata and event carry the
///         completed signature, from which the vault extracts the adaptor secret t = s − ŝ.
contract SchnorrVerifier {
    error InvalidSchnorrSignature();

    /// @dev Carries the completed signature (e, s) so that the vault can extract t from the log
    ///      even when the call came through another contract (a wallet, a relayer, a multicall)
    ///      and the transaction's top-level calldata is not this function's.
    event PaymentSignatureAccepted(
        bytes32 indexed publicKey, bytes32 indexed message, bytes32 channelId, uint256 requestId, bytes32 e, uint256 s
    );

    /// @notice Whether (e, s) is a valid EVM-flavour Schnorr signature on `message` by `px`.
    function verify(bytes32 px, bytes32 message, bytes32 e, uint256 s) external pure returns (bool) {
        return Schnorr.verify(px, message, e, s);
    }

    /// @notice `verify`, plus the gas the verification itself used (no call or calldata overhead).
    function verifyWithGas(bytes32 px, bytes32 message, bytes32 e, uint256 s)
        external
        view
        returns (bool valid, uint256 gasUsed)
    {
        uint256 before = gasleft();
        valid = Schnorr.verify(px, message, e, s);
        gasUsed = before - gasleft();
    }

    /// @notice The EIP-712 domain separator of payments settled by this contract.
    function domainSeparator() public view returns (bytes32) {
        return A402Message.domainSeparator(block.chainid, address(this));
    }

    /// @notice The payment message m for this contract's domain.
    function paymentMessage(bytes32 channelId, uint256 requestId, uint256 amount, bytes32 resultHash)
        public
        view
        returns (bytes32)
    {
        return A402Message.paymentMessage(domainSeparator(), channelId, requestId, amount, resultHash);
    }

    /// @notice The digest of the vault's conditional payment signature σ_U in this domain.
    function authorizationDigest(bytes32 payment, uint256 amount, bytes32 challenge)
        public
        view
        returns (bytes32)
    {
        return A402Message.authorizationDigest(domainSeparator(), payment, amount, challenge);
    }

    /// @notice The address whose ECDSA signature σ_U authorizes these terms (reverts if malformed).
    function authorizationSigner(bytes32 payment, uint256 amount, bytes32 challenge, bytes calldata signature)
        external
        view
        returns (address)
    {
        return ECDSA.recoverCalldata(authorizationDigest(payment, amount, challenge), signature);
    }

    /// @notice Accept the provider's completed signature on the payment message of one request,
    ///         as a settlement would: recompute m on-chain, verify, and publish. Reverts if invalid.
    function acceptPayment(
        bytes32 px,
        bytes32 channelId,
        uint256 requestId,
        uint256 amount,
        bytes32 resultHash,
        bytes32 e,
        uint256 s
    ) external {
        bytes32 message = paymentMessage(channelId, requestId, amount, resultHash);
        if (!Schnorr.verify(px, message, e, s)) revert InvalidSchnorrSignature();
        emit PaymentSignatureAccepted(px, message, channelId, requestId, e, s);
    }
}
