// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

/// @dev One A2A `AgentInterface` (v1.0): where and how the agent is reached.
struct AgentInterface {
    string url;
    string protocolBinding; // "JSONRPC", "GRPC", "HTTP+JSON"
    string protocolVersion; // "1.0", "0.3"
}

/// @dev One A2A `AgentSkill`. `examples`, `inputModes` and `outputModes` are optional: an empty
///      list is left out of the JSON, as an A2A server leaves out an unset repeated field.
struct AgentSkill {
    string id;
    string name;
    string description;
    string[] tags;
    string[] examples;
    string[] inputModes;
    string[] outputModes;
}

/// @dev The text of an AgentCard: everything but the version, the capability flags and the
///      payment terms. It is stored as one compact blob (see `AgentCard`), written at once.
///      `paymentDescription` is the x402 extension's `description` (omitted when empty, and
///      not shown while the agent charges nothing); it is text, so it lives here.
struct AgentProfile {
    string name;
    string description;
    AgentInterface[] interfaces;
    string[] defaultInputModes;
    string[] defaultOutputModes;
    AgentSkill[] skills;
    string paymentDescription;
}

/// @dev A2A v1.0 `AgentCapabilities` (the x402 extension is rendered from `PaymentTerms`).
struct AgentCapabilities {
    bool streaming;
    bool pushNotifications;
    bool extendedAgentCard;
}

/// @dev The x402 payment extension's params: pay `amount` base units of `asset` on `network`
///      (CAIP-2) to `payTo` with x402 scheme `scheme` ("exact"). `payTo == 0` means the agent
///      charges nothing; then every field must be empty.
struct PaymentTerms {
    string scheme;
    string network;
    address asset;
    uint256 amount;
    address payTo;
}

/// @dev A whole on-chain AgentCard, as `Agent.card()` returns it.
struct AgentCardData {
    AgentProfile profile;
    string version;
    AgentCapabilities capabilities;
    PaymentTerms payment;
}

/// @dev A whole card as `AgentFactory.createAgent` and `Agent.updateCard` take it: the profile
///      already in its compact encoding (`AgentCardRenderer.encodeProfile` makes it from an
///      `AgentProfile`; `a402.agents.card.encode_profile` in Python). The contract validates the
///      encoding instead of building it: decoding nested structs from calldata costs several
///      times more gas than checking the blob, and the blob is smaller calldata.
struct AgentCardInput {
    bytes profile;
    string version;
    AgentCapabilities capabilities;
    PaymentTerms payment;
}

/// @title AgentCard: compact storage and canonical JSON of an on-chain A2A AgentCard.
/// @notice Storage. The profile is encoded compactly — a format byte, then every string as a
///         2-byte big-endian length and its UTF-8 bytes, every list as a 2-byte count and its
///         items — and written as the runtime code of a data contract (`store`/`load`), which
///         costs about 200 gas a byte instead of ~700 for storage slots and cannot change later.
///         Field order in the blob is the JSON key order, so rendering is one forward pass:
///           profile   = 0x01 str(paymentDescription) list(defaultInputModes)
///                       list(defaultOutputModes) str(description) str(name) count(skills) skill*
///                       count(interfaces) interface*
///           skill     = str(description) list(examples) str(id) list(inputModes) str(name)
///                       list(outputModes) list(tags)
///           interface = str(protocolBinding) str(protocolVersion) str(url)
///
///         Canonical JSON. `renderJSON` writes the card with keys sorted, no whitespace, strings
///         escaped as RFC 8785 (JCS) and Python's `json.dumps(..., ensure_ascii=False)` both do
///         (`\"`, `\\`, `\b \t \n \f \r`, other controls as lowercase `\u00xx`, everything else
///         verbatim), addresses EIP-55 checksummed and the amount a decimal string (JSON numbers
///         lose precision past 2^53). So `keccak256(cardJSON)` equals the hash of
///         `json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` over the
///         same card: the client checks a served card against the chain byte for byte
///         (`a402.agents.card`). Every string is checked to be valid UTF-8 when written, so the
///         JSON is always valid.
library AgentCard {
    /// @dev EIP-170 caps code at 24,576 bytes; the data contract's code is 0x00 ‖ profile.
    uint256 internal constant MAX_PROFILE_BYTES = 24_575;
    uint8 internal constant FORMAT = 1;
    /// @dev The a2a-x402 extension URI of spec v0.1, the one x402's A2A transport also uses.
    string internal constant X402_EXTENSION_URI = "https://github.com/google-a2a/a2a-x402/v0.1";

    error InvalidUtf8();
    error ProfileTooLarge();
    error MissingField(string field);
    error InvalidPaymentTerms();
    error BadProfileData();
    error ProfileStoreFailed();

    // ---------------------------------------------------------------- validation

    /// @notice Reverts unless `b` is well-formed UTF-8 (no overlong forms, no surrogates,
    ///         nothing above U+10FFFF). ASCII is checked up to 32 bytes per step.
    function checkUtf8(bytes calldata b) internal pure {
        uint256 len = b.length;
        uint256 i;
        while (i < len) {
            uint256 word;
            assembly ("memory-safe") {
                word := calldataload(add(b.offset, i))
            }
            uint256 n = len - i;
            if (n >= 32) {
                n = 32;
            } else {
                word &= ~(type(uint256).max >> (8 * n)); // keep the first n bytes
            }
            if (word & 0x8080808080808080808080808080808080808080808080808080808080808080 == 0) {
                i += n;
                continue;
            }
            uint256 c = uint8(b[i]);
            if (c < 0x80) {
                ++i;
                continue;
            }
            uint256 extra;
            uint256 cp;
            if (c >= 0xC2 && c <= 0xDF) {
                extra = 1;
                cp = c & 0x1F;
            } else if (c >= 0xE0 && c <= 0xEF) {
                extra = 2;
                cp = c & 0x0F;
            } else if (c >= 0xF0 && c <= 0xF4) {
                extra = 3;
                cp = c & 0x07;
            } else {
                revert InvalidUtf8();
            }
            if (i + extra >= len) revert InvalidUtf8();
            for (uint256 k = 1; k <= extra; ++k) {
                uint256 cc = uint8(b[i + k]);
                if (cc & 0xC0 != 0x80) revert InvalidUtf8();
                cp = (cp << 6) | (cc & 0x3F);
            }
            if (extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) revert InvalidUtf8();
            if (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)) revert InvalidUtf8();
            i += extra + 1;
        }
    }

    /// @notice Reverts unless the terms are either all empty (a free agent) or name a payee, a
    ///         scheme and a network.
    function checkPayment(PaymentTerms calldata p) internal pure {
        if (p.payTo == address(0)) {
            if (
                p.asset != address(0) || p.amount != 0 || bytes(p.network).length != 0
                    || bytes(p.scheme).length != 0
            ) revert InvalidPaymentTerms();
        } else {
            if (bytes(p.network).length == 0 || bytes(p.scheme).length == 0) revert InvalidPaymentTerms();
            checkUtf8(bytes(p.scheme));
            checkUtf8(bytes(p.network));
        }
    }

    /// @notice Reverts unless the version is a non-empty UTF-8 string.
    function checkVersion(string calldata version) internal pure {
        if (bytes(version).length == 0) revert MissingField("version");
        checkUtf8(bytes(version));
    }

    // ---------------------------------------------------------------- encoding

    /// @notice Validates a profile and encodes it in the compact format above.
    function encodeProfile(AgentProfile calldata p) internal pure returns (bytes memory out) {
        if (bytes(p.name).length == 0) revert MissingField("name");
        if (p.interfaces.length == 0) revert MissingField("supportedInterfaces");
        out = new bytes(MAX_PROFILE_BYTES);
        uint256 n = _putCount(out, 0, FORMAT, 1);
        n = _putStr(out, n, p.paymentDescription);
        n = _putList(out, n, p.defaultInputModes);
        n = _putList(out, n, p.defaultOutputModes);
        n = _putStr(out, n, p.description);
        n = _putStr(out, n, p.name);
        n = _putCount(out, n, p.skills.length, 2);
        for (uint256 i; i < p.skills.length; ++i) {
            AgentSkill calldata s = p.skills[i];
            if (bytes(s.id).length == 0) revert MissingField("skills.id");
            n = _putStr(out, n, s.description);
            n = _putList(out, n, s.examples);
            n = _putStr(out, n, s.id);
            n = _putList(out, n, s.inputModes);
            n = _putStr(out, n, s.name);
            n = _putList(out, n, s.outputModes);
            n = _putList(out, n, s.tags);
        }
        n = _putCount(out, n, p.interfaces.length, 2);
        for (uint256 i; i < p.interfaces.length; ++i) {
            AgentInterface calldata f = p.interfaces[i];
            if (bytes(f.url).length == 0) revert MissingField("supportedInterfaces.url");
            if (bytes(f.protocolBinding).length == 0) revert MissingField("supportedInterfaces.protocolBinding");
            if (bytes(f.protocolVersion).length == 0) revert MissingField("supportedInterfaces.protocolVersion");
            n = _putStr(out, n, f.protocolBinding);
            n = _putStr(out, n, f.protocolVersion);
            n = _putStr(out, n, f.url);
        }
        assembly ("memory-safe") {
            mstore(out, n)
        }
    }

    function _putCount(bytes memory out, uint256 n, uint256 value, uint256 width) private pure returns (uint256) {
        if (n + width > MAX_PROFILE_BYTES || value >> (8 * width) != 0) revert ProfileTooLarge();
        if (width == 2) {
            out[n] = bytes1(uint8(value >> 8));
            out[n + 1] = bytes1(uint8(value));
        } else {
            out[n] = bytes1(uint8(value));
        }
        return n + width;
    }

    function _putStr(bytes memory out, uint256 n, string calldata s) private pure returns (uint256) {
        uint256 len = bytes(s).length;
        n = _putCount(out, n, len, 2);
        if (n + len > MAX_PROFILE_BYTES) revert ProfileTooLarge();
        checkUtf8(bytes(s));
        assembly ("memory-safe") {
            calldatacopy(add(add(out, 0x20), n), s.offset, len)
        }
        return n + len;
    }

    function _putList(bytes memory out, uint256 n, string[] calldata items) private pure returns (uint256) {
        n = _putCount(out, n, items.length, 2);
        for (uint256 i; i < items.length; ++i) {
            n = _putStr(out, n, items[i]);
        }
        return n;
    }

    // ---------------------------------------------------------------- validating a blob

    /// @notice Reverts unless `d` is a well-formed profile blob — the exact layout above, every
    ///         string valid UTF-8, no trailing bytes — with the fields `encodeProfile` requires
    ///         (name, at least one interface with url/binding/version, every skill's id).
    ///         A blob it accepts is one `encodeProfile` could have produced.
    function validateProfile(bytes calldata d) internal pure {
        if (d.length == 0 || d.length > MAX_PROFILE_BYTES || uint8(d[0]) != FORMAT) revert BadProfileData();
        uint256 i = _vStr(d, 1, ""); // paymentDescription
        i = _vList(d, i); // defaultInputModes
        i = _vList(d, i); // defaultOutputModes
        i = _vStr(d, i, ""); // description
        i = _vStr(d, i, "name");
        uint256 count;
        (count, i) = _vCount(d, i);
        for (uint256 k; k < count; ++k) {
            i = _vStr(d, i, ""); // description
            i = _vList(d, i); // examples
            i = _vStr(d, i, "skills.id");
            i = _vList(d, i); // inputModes
            i = _vStr(d, i, ""); // name
            i = _vList(d, i); // outputModes
            i = _vList(d, i); // tags
        }
        (count, i) = _vCount(d, i);
        if (count == 0) revert MissingField("supportedInterfaces");
        for (uint256 k; k < count; ++k) {
            i = _vStr(d, i, "supportedInterfaces.protocolBinding");
            i = _vStr(d, i, "supportedInterfaces.protocolVersion");
            i = _vStr(d, i, "supportedInterfaces.url");
        }
        if (i != d.length) revert BadProfileData();
    }

    function _vCount(bytes calldata d, uint256 i) private pure returns (uint256 value, uint256 next) {
        if (i + 2 > d.length) revert BadProfileData();
        assembly ("memory-safe") {
            value := shr(240, calldataload(add(d.offset, i)))
        }
        next = i + 2;
    }

    /// @dev Checks the string at `i`; a non-empty `required` names a field that must not be empty.
    function _vStr(bytes calldata d, uint256 i, string memory required) private pure returns (uint256) {
        uint256 len;
        (len, i) = _vCount(d, i);
        if (i + len > d.length) revert BadProfileData();
        if (len == 0 && bytes(required).length != 0) revert MissingField(required);
        checkUtf8(d[i:i + len]);
        return i + len;
    }

    function _vList(bytes calldata d, uint256 i) private pure returns (uint256) {
        uint256 count;
        (count, i) = _vCount(d, i);
        for (uint256 k; k < count; ++k) {
            i = _vStr(d, i, "");
        }
        return i;
    }

    // ---------------------------------------------------------------- the data contract

    /// @notice Writes `data` as the code of a new contract (prefixed by STOP so it can never run)
    ///         and returns its address. The init code copies the runtime that follows it:
    ///         PUSH2 size, DUP1, PUSH1 10, RETURNDATASIZE, CODECOPY, RETURNDATASIZE, RETURN.
    function store(bytes calldata data) internal returns (address pointer) {
        bytes memory init = abi.encodePacked(hex"61", uint16(data.length + 1), hex"80600a3d393df300", data);
        assembly ("memory-safe") {
            pointer := create(0, add(init, 0x20), mload(init))
        }
        if (pointer == address(0)) revert ProfileStoreFailed();
    }

    /// @notice The bytes `store` wrote at `pointer`.
    function load(address pointer) internal view returns (bytes memory data) {
        uint256 size = pointer.code.length;
        if (size == 0) revert BadProfileData();
        data = new bytes(size - 1);
        assembly ("memory-safe") {
            extcodecopy(pointer, add(data, 0x20), 1, sub(size, 1))
        }
    }

    // ---------------------------------------------------------------- decoding

    /// @notice The profile a blob encodes.
    function decodeProfile(bytes memory d) internal pure returns (AgentProfile memory p) {
        uint256 i = _format(d);
        (p.paymentDescription, i) = _getStr(d, i);
        (p.defaultInputModes, i) = _getList(d, i);
        (p.defaultOutputModes, i) = _getList(d, i);
        (p.description, i) = _getStr(d, i);
        (p.name, i) = _getStr(d, i);
        uint256 count;
        (count, i) = _getCount(d, i);
        p.skills = new AgentSkill[](count);
        for (uint256 k; k < count; ++k) {
            AgentSkill memory s = p.skills[k];
            (s.description, i) = _getStr(d, i);
            (s.examples, i) = _getList(d, i);
            (s.id, i) = _getStr(d, i);
            (s.inputModes, i) = _getList(d, i);
            (s.name, i) = _getStr(d, i);
            (s.outputModes, i) = _getList(d, i);
            (s.tags, i) = _getList(d, i);
        }
        (count, i) = _getCount(d, i);
        p.interfaces = new AgentInterface[](count);
        for (uint256 k; k < count; ++k) {
            AgentInterface memory f = p.interfaces[k];
            (f.protocolBinding, i) = _getStr(d, i);
            (f.protocolVersion, i) = _getStr(d, i);
            (f.url, i) = _getStr(d, i);
        }
        if (i != d.length) revert BadProfileData();
    }

    /// @notice The name, read without decoding the rest (it sits after three fields).
    function profileName(bytes memory d) internal pure returns (string memory name) {
        uint256 i = _skipStrAt(d, _format(d)); // paymentDescription
        i = _skipList(d, i);
        i = _skipList(d, i);
        i = _skipStrAt(d, i);
        (name,) = _getStr(d, i);
    }

    function _format(bytes memory d) private pure returns (uint256) {
        if (d.length == 0 || uint8(d[0]) != FORMAT) revert BadProfileData();
        return 1;
    }

    function _getCount(bytes memory d, uint256 i) private pure returns (uint256 value, uint256 next) {
        if (i + 2 > d.length) revert BadProfileData();
        value = (uint256(uint8(d[i])) << 8) | uint8(d[i + 1]);
        next = i + 2;
    }

    function _getStr(bytes memory d, uint256 i) private pure returns (string memory s, uint256 next) {
        uint256 len;
        (len, i) = _getCount(d, i);
        if (i + len > d.length) revert BadProfileData();
        bytes memory b = new bytes(len);
        assembly ("memory-safe") {
            mcopy(add(b, 0x20), add(add(d, 0x20), i), len)
        }
        return (string(b), i + len);
    }

    function _getList(bytes memory d, uint256 i) private pure returns (string[] memory items, uint256 next) {
        uint256 count;
        (count, i) = _getCount(d, i);
        items = new string[](count);
        for (uint256 k; k < count; ++k) {
            (items[k], i) = _getStr(d, i);
        }
        return (items, i);
    }

    function _skipStrAt(bytes memory d, uint256 i) private pure returns (uint256) {
        (uint256 len, uint256 next) = _getCount(d, i);
        if (next + len > d.length) revert BadProfileData();
        return next + len;
    }

    function _skipList(bytes memory d, uint256 i) private pure returns (uint256) {
        uint256 count;
        (count, i) = _getCount(d, i);
        for (uint256 k; k < count; ++k) {
            i = _skipStrAt(d, i);
        }
        return i;
    }

    // ---------------------------------------------------------------- JSON

    /// @dev A growable output buffer: `buf` is the allocation, `len` the bytes written.
    struct Out {
        bytes buf;
        uint256 len;
    }

    /// @notice The canonical JSON of a card (see the contract notes for the exact form).
    function renderJSON(
        bytes memory d,
        string memory version,
        AgentCapabilities memory caps,
        PaymentTerms memory pay
    ) internal pure returns (bytes memory) {
        Out memory o = Out(new bytes(2 * d.length + 1024), 0);
        _lit(o, '{"capabilities":{"extendedAgentCard":');
        _lit(o, caps.extendedAgentCard ? "true" : "false");
        uint256 i = _format(d);
        (uint256 descriptionLength,) = _getCount(d, i);
        if (pay.payTo != address(0)) {
            _lit(o, ',"extensions":[{');
            if (descriptionLength != 0) {
                _lit(o, '"description":');
                _str(o, d, i);
                _lit(o, ",");
            }
            _lit(o, '"params":{"amount":"');
            _lit(o, Strings.toString(pay.amount));
            _lit(o, '","asset":"');
            _lit(o, Strings.toChecksumHexString(pay.asset));
            _lit(o, '","network":');
            _quotedString(o, pay.network);
            _lit(o, ',"payTo":"');
            _lit(o, Strings.toChecksumHexString(pay.payTo));
            _lit(o, '","scheme":');
            _quotedString(o, pay.scheme);
            _lit(o, '},"required":true,"uri":"');
            _lit(o, X402_EXTENSION_URI);
            _lit(o, '"}]');
        }
        i = _skipStrAt(d, i);
        _lit(o, ',"pushNotifications":');
        _lit(o, caps.pushNotifications ? "true" : "false");
        _lit(o, ',"streaming":');
        _lit(o, caps.streaming ? "true" : "false");
        _lit(o, '},"defaultInputModes":');
        i = _list(o, d, i);
        _lit(o, ',"defaultOutputModes":');
        i = _list(o, d, i);
        _lit(o, ',"description":');
        i = _str(o, d, i);
        _lit(o, ',"name":');
        i = _str(o, d, i);
        _lit(o, ',"skills":[');
        uint256 count;
        (count, i) = _getCount(d, i);
        for (uint256 k; k < count; ++k) {
            _lit(o, k == 0 ? '{"description":' : ',{"description":');
            i = _str(o, d, i);
            i = _optionalList(o, d, i, ',"examples":');
            _lit(o, ',"id":');
            i = _str(o, d, i);
            i = _optionalList(o, d, i, ',"inputModes":');
            _lit(o, ',"name":');
            i = _str(o, d, i);
            i = _optionalList(o, d, i, ',"outputModes":');
            _lit(o, ',"tags":');
            i = _list(o, d, i);
            _lit(o, "}");
        }
        _lit(o, '],"supportedInterfaces":[');
        (count, i) = _getCount(d, i);
        for (uint256 k; k < count; ++k) {
            _lit(o, k == 0 ? '{"protocolBinding":' : ',{"protocolBinding":');
            i = _str(o, d, i);
            _lit(o, ',"protocolVersion":');
            i = _str(o, d, i);
            _lit(o, ',"url":');
            i = _str(o, d, i);
            _lit(o, "}");
        }
        if (i != d.length) revert BadProfileData();
        _lit(o, '],"version":');
        _quotedString(o, version);
        _lit(o, "}");
        bytes memory result = o.buf;
        uint256 written = o.len;
        assembly ("memory-safe") {
            mstore(result, written)
        }
        return result;
    }

    /// @dev Makes room for `extra` more bytes, doubling the allocation when it is too small.
    function _reserve(Out memory o, uint256 extra) private pure {
        uint256 capacity = o.buf.length;
        if (o.len + extra <= capacity) return;
        uint256 grown = 2 * capacity;
        if (grown < o.len + extra) grown = o.len + extra;
        bytes memory bigger = new bytes(grown);
        bytes memory old = o.buf;
        uint256 used = o.len;
        assembly ("memory-safe") {
            mcopy(add(bigger, 0x20), add(old, 0x20), used)
        }
        o.buf = bigger;
    }

    function _lit(Out memory o, string memory s) private pure {
        uint256 len = bytes(s).length;
        _reserve(o, len);
        bytes memory buf = o.buf;
        uint256 pos = o.len;
        assembly ("memory-safe") {
            mcopy(add(add(buf, 0x20), pos), add(s, 0x20), len)
        }
        o.len = pos + len;
    }

    /// @dev Writes `src[start:start+len]` as a JSON string: quoted, with `"` `\` and controls
    ///      escaped, every other byte (valid UTF-8, checked on write) copied as is.
    function _quoted(Out memory o, bytes memory src, uint256 start, uint256 len) private pure {
        _reserve(o, 6 * len + 2);
        bytes memory buf = o.buf;
        uint256 pos = o.len;
        assembly ("memory-safe") {
            let base := add(buf, 0x20)
            let out := add(base, pos)
            mstore8(out, 0x22)
            out := add(out, 1)
            let p := add(add(src, 0x20), start)
            let end := add(p, len)
            for {} lt(p, end) { p := add(p, 1) } {
                let c := byte(0, mload(p))
                switch or(lt(c, 0x20), or(eq(c, 0x22), eq(c, 0x5c)))
                case 0 {
                    mstore8(out, c)
                    out := add(out, 1)
                }
                default {
                    mstore8(out, 0x5c)
                    let short := 0
                    switch c
                    case 0x08 { short := 0x62 } // \b
                    case 0x09 { short := 0x74 } // \t
                    case 0x0a { short := 0x6e } // \n
                    case 0x0c { short := 0x66 } // \f
                    case 0x0d { short := 0x72 } // \r
                    case 0x22 { short := 0x22 } // \"
                    case 0x5c { short := 0x5c } // \\
                    switch short
                    case 0 {
                        // \u00xx, lowercase hex; c < 0x20 so the high nibble is 0 or 1
                        let lo := and(c, 0x0f)
                        mstore8(add(out, 1), 0x75)
                        mstore8(add(out, 2), 0x30)
                        mstore8(add(out, 3), 0x30)
                        mstore8(add(out, 4), add(0x30, shr(4, c)))
                        mstore8(add(out, 5), add(lo, add(0x30, mul(lt(9, lo), 0x27))))
                        out := add(out, 6)
                    }
                    default {
                        mstore8(add(out, 1), short)
                        out := add(out, 2)
                    }
                }
            }
            mstore8(out, 0x22)
            out := add(out, 1)
            pos := sub(out, base)
        }
        o.len = pos;
    }

    function _quotedString(Out memory o, string memory s) private pure {
        _quoted(o, bytes(s), 0, bytes(s).length);
    }

    /// @dev The string at blob offset `i`, as JSON; returns the offset after it.
    function _str(Out memory o, bytes memory d, uint256 i) private pure returns (uint256) {
        (uint256 len, uint256 start) = _getCount(d, i);
        if (start + len > d.length) revert BadProfileData();
        _quoted(o, d, start, len);
        return start + len;
    }

    function _list(Out memory o, bytes memory d, uint256 i) private pure returns (uint256) {
        uint256 count;
        (count, i) = _getCount(d, i);
        _lit(o, "[");
        for (uint256 k; k < count; ++k) {
            if (k != 0) _lit(o, ",");
            i = _str(o, d, i);
        }
        _lit(o, "]");
        return i;
    }

    function _optionalList(Out memory o, bytes memory d, uint256 i, string memory key) private pure returns (uint256) {
        (uint256 count,) = _getCount(d, i);
        if (count == 0) return i + 2;
        _lit(o, key);
        return _list(o, d, i);
    }
}
