// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @dev The part of Permit2 this proxy calls.
interface ISignatureTransfer {
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    struct SignatureTransferDetails {
        address to;
        uint256 requestedAmount;
    }

    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;
}

/// @title UptoPermit2Proxy: settles x402 `upto` payments through Permit2.
/// @notice The payer signs a Permit2 transfer of at most `permitted.amount`, whose
/// spender is this proxy and whose witness names the payee (`to`), the one
/// facilitator allowed to settle it, and the time from which it may be (`validAfter`).
/// The facilitator then settles the amount actually owed, at most the signed one.
/// Same entry point, witness type and errors as the x402 `upto` proxy the official
/// SDKs call (`settle(permit, amount, owner, witness, signature)`), written for
/// a402 from that interface. No constructor and no immutables: its runtime code can
/// be placed at the SDKs' fixed proxy address on a development chain.
/// Safety: only `witness.facilitator` may settle (a copy of the signature in anyone
/// else's hands moves nothing); the money can go only to the signed `witness.to`;
/// Permit2 spends the nonce, so a signature settles at most once, for at most its
/// amount.
contract UptoPermit2Proxy {
    address public constant PERMIT2 = 0x000000000022D473030F116dDEE9F6B43aC78BA3;

    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";
    bytes32 public constant WITNESS_TYPEHASH =
        keccak256("Witness(address to,address facilitator,uint256 validAfter)");

    event Settled(address indexed owner, address indexed to, address indexed token, uint256 amount);

    error InvalidDestination();
    error InvalidOwner();
    error PaymentTooEarly();
    error AmountExceedsPermitted();
    error UnauthorizedFacilitator();

    function settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external {
        if (owner == address(0)) revert InvalidOwner();
        if (witness.to == address(0)) revert InvalidDestination();
        if (msg.sender != witness.facilitator) revert UnauthorizedFacilitator();
        if (block.timestamp < witness.validAfter) revert PaymentTooEarly();
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted();
        ISignatureTransfer(PERMIT2).permitWitnessTransferFrom(
            permit,
            ISignatureTransfer.SignatureTransferDetails({to: witness.to, requestedAmount: amount}),
            owner,
            keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter)),
            WITNESS_TYPE_STRING,
            signature
        );
        emit Settled(owner, witness.to, permit.permitted.token, amount);
    }
}
