"""WeCom's callback message encryption (the WXBizMsgCrypt scheme), without dependencies.

WeCom signs and encrypts what it pushes to a callback URL:
- msg_signature = sha1 of the sorted, concatenated [Token, timestamp, nonce, Encrypt];
- Encrypt = base64(AES-256-CBC(random 16 bytes + 4-byte big-endian length + message +
  ReceiveId)), the key being base64 of the 43-character EncodingAESKey plus "=", the IV
  its first 16 bytes, padded PKCS#7 to a multiple of 32 bytes.

The messages are a few hundred bytes, so AES is done here in plain Python (FIPS-197)
rather than adding a compiled cryptography package for it. Both sides use this module:
the callback app (`notifier.wecom_callback`) verifies and decrypts, the fake WeCom
(`simulators.fake_providers.wecom`) encrypts and signs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct

BLOCK = 16
PAD_BLOCK = 32  # WXBizMsgCrypt pads to 32 bytes, not AES's 16
AES_KEY_CHARS = 43


class WeComCryptoError(ValueError):
    """A push that does not verify or decrypt (forged, corrupted, or for another corp)."""


# --- AES (FIPS-197), encryption and decryption of 16-byte blocks ----------------------


def _xtime(a: int) -> int:
    a <<= 1
    return (a ^ 0x11B) & 0xFF if a & 0x100 else a


def _mul(a: int, b: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        a = _xtime(a)
        b >>= 1
    return result


def _sbox() -> tuple[list[int], list[int]]:
    inverse = [0] * 256
    for a in range(1, 256):  # multiplicative inverses in GF(2^8)
        for b in range(1, 256):
            if _mul(a, b) == 1:
                inverse[a] = b
                break
    sbox = [0] * 256
    for x in range(256):
        b = inverse[x]
        s = b
        for shift in range(1, 5):
            s ^= ((b << shift) | (b >> (8 - shift))) & 0xFF
        sbox[x] = s ^ 0x63
    inv = [0] * 256
    for x, s in enumerate(sbox):
        inv[s] = x
    return sbox, inv


SBOX, INV_SBOX = _sbox()
_MUL = {k: [_mul(x, k) for x in range(256)] for k in (2, 3, 9, 11, 13, 14)}


def _expand_key(key: bytes) -> list[list[int]]:
    """The 15 round keys (16 bytes each) of a 32-byte key."""
    if len(key) != 32:
        raise WeComCryptoError("AES-256 needs a 32-byte key")
    words = [list(key[i : i + 4]) for i in range(0, 32, 4)]
    rcon = 1
    for i in range(8, 60):
        word = list(words[i - 1])
        if i % 8 == 0:
            word = [SBOX[b] for b in word[1:] + word[:1]]
            word[0] ^= rcon
            rcon = _xtime(rcon)
        elif i % 8 == 4:
            word = [SBOX[b] for b in word]
        words.append([a ^ b for a, b in zip(words[i - 8], word, strict=True)])
    return [[b for word in words[r * 4 : r * 4 + 4] for b in word] for r in range(15)]


def _shift(state: list[int], inverse: bool) -> list[int]:
    # state is column-major: byte (row r, column c) at 4c + r
    sign = -1 if inverse else 1
    return [state[4 * ((c + sign * r) % 4) + r] for c in range(4) for r in range(4)]


def _mix(state: list[int], factors: tuple[int, int, int, int]) -> list[int]:
    out: list[int] = []
    for c in range(4):
        col = state[4 * c : 4 * c + 4]
        for r in range(4):
            value = 0
            for i in range(4):
                f = factors[(i - r) % 4]
                value ^= col[i] if f == 1 else _MUL[f][col[i]]
            out.append(value)
    return out


def encrypt_block(round_keys: list[list[int]], block: bytes) -> bytes:
    state = [b ^ k for b, k in zip(block, round_keys[0], strict=True)]
    for rnd in range(1, 15):
        state = _shift([SBOX[b] for b in state], inverse=False)
        if rnd != 14:
            state = _mix(state, (2, 3, 1, 1))
        state = [b ^ k for b, k in zip(state, round_keys[rnd], strict=True)]
    return bytes(state)


def decrypt_block(round_keys: list[list[int]], block: bytes) -> bytes:
    state = [b ^ k for b, k in zip(block, round_keys[14], strict=True)]
    for rnd in range(13, -1, -1):
        state = [INV_SBOX[b] for b in _shift(state, inverse=True)]
        state = [b ^ k for b, k in zip(state, round_keys[rnd], strict=True)]
        if rnd != 0:
            state = _mix(state, (14, 11, 13, 9))
    return bytes(state)


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    if len(data) % BLOCK:
        raise WeComCryptoError("not a whole number of blocks")
    keys, previous, out = _expand_key(key), iv, bytearray()
    for i in range(0, len(data), BLOCK):
        previous = encrypt_block(
            keys, bytes(a ^ b for a, b in zip(data[i : i + BLOCK], previous, strict=True))
        )
        out += previous
    return bytes(out)


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    if not data or len(data) % BLOCK:
        raise WeComCryptoError("not a whole number of blocks")
    keys, previous, out = _expand_key(key), iv, bytearray()
    for i in range(0, len(data), BLOCK):
        block = data[i : i + BLOCK]
        out += bytes(a ^ b for a, b in zip(decrypt_block(keys, block), previous, strict=True))
        previous = block
    return bytes(out)


# --- WXBizMsgCrypt -----------------------------------------------------------------------


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte key of a 43-character EncodingAESKey."""
    if len(encoding_aes_key) != AES_KEY_CHARS:
        raise WeComCryptoError("EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise WeComCryptoError("EncodingAESKey is not base64") from exc
    if len(key) != 32:
        raise WeComCryptoError("EncodingAESKey is not 32 bytes")
    return key


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    joined = "".join(sorted([token, timestamp, nonce, encrypted])).encode()
    return hashlib.sha1(joined, usedforsecurity=False).hexdigest()


def verify(token: str, timestamp: str, nonce: str, encrypted: str, msg_signature: str) -> bool:
    """Whether msg_signature is WeCom's (compared in constant time)."""
    expected = signature(token, timestamp, nonce, encrypted)
    return hmac.compare_digest(expected.encode(), msg_signature.encode())


# A signed push older (or newer) than this is refused: a captured push cannot be replayed
# once it has left the receipt store's memory, and a clock that is far off shows.
PUSH_MAX_AGE_S = 300


def fresh(timestamp: str, now_s: float, max_age_s: float = PUSH_MAX_AGE_S) -> bool:
    """Whether a push's `timestamp` (seconds, as WeCom signs it) is within `max_age_s`
    of `now_s`, either way."""
    try:
        sent_s = int(timestamp)
    except ValueError:
        return False
    return abs(now_s - sent_s) <= max_age_s


def encrypt(encoding_aes_key: str, receive_id: str, message: bytes) -> str:
    """Encrypt as WeCom does (the fake WeCom uses this); returns the base64 Encrypt."""
    key = aes_key(encoding_aes_key)
    plain = secrets.token_bytes(16) + struct.pack(">I", len(message)) + message
    plain += receive_id.encode()
    pad = PAD_BLOCK - len(plain) % PAD_BLOCK
    return base64.b64encode(cbc_encrypt(key, key[:16], plain + bytes([pad]) * pad)).decode()


def decrypt(encoding_aes_key: str, receive_id: str, encrypted: str) -> bytes:
    """The message of an Encrypt field; refuses one that is not for `receive_id` (our
    CorpID) or does not decode."""
    key = aes_key(encoding_aes_key)
    try:
        data = base64.b64decode(encrypted, validate=True)
    except binascii.Error as exc:
        raise WeComCryptoError("Encrypt is not base64") from exc
    plain = cbc_decrypt(key, key[:16], data)
    pad = plain[-1]
    if not 1 <= pad <= PAD_BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise WeComCryptoError("bad padding")
    plain = plain[:-pad]
    if len(plain) < 20:
        raise WeComCryptoError("too short")
    (length,) = struct.unpack(">I", plain[16:20])
    message, rest = plain[20 : 20 + length], plain[20 + length :]
    if len(message) != length or rest != receive_id.encode():
        raise WeComCryptoError("not for this receiver")
    return message
