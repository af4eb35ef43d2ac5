"""The expected PCR 11 values of a UKI and the signed PCR policy it carries (``.pcrsig``, ``.pcrpkey``).

A port of ``siderolabs/talos@v1.14.0-rc.1:internal/pkg/measure`` (``GenerateSignedPCR``,
``internal/pcr``), which is itself a Go rewrite of ``systemd-measure sign`` (``src/boot/measure.c``).

At boot, systemd-stub extends PCR 11 with every UKI section it knows, in a fixed order
(:data:`MEASURED_SECTIONS`): ``H(name + NUL)`` then ``H(content)``, where extending ``v`` by ``d`` is
``v = H(v || d)`` starting from zeros. Later each boot phase word is extended as ``H(word)``: Talos
extends ``enter-initrd`` and ``leave-initrd`` itself and then ``enter-machined``, and only the value
after all three is signed (:data:`TALOS_PHASES`), so machined alone can unseal the disk keys.

For each bank and phase, ``.pcrsig`` holds ``{"pcrs":[11],"pkfp":…,"pol":…,"sig":…}``:

- ``pol``: the TPM2 ``PolicyPCR`` digest for PCR 11 holding that value. The policy session is always
  SHA-256 and so is the PCR digest inside it (``H256(pcr value)``); only the PCR selection names the
  bank (``tpm2_calculate_policy_pcr`` in systemd, ``tpm2.CalculatePolicy`` in Talos).
- ``sig``: RSA PKCS #1 v1.5 over ``H_bank(pol)`` (the bank's own hash: SHA-256 for the sha256
  bank, SHA-384 for sha384 …), base64.
- ``pkfp``: SHA-256 of the public key as a DER PKCS #1 ``RSAPublicKey`` (``i2d_PublicKey`` in
  systemd, ``x509.MarshalPKCS1PublicKey`` in Talos), *not* of the SubjectPublicKeyInfo.

The private key is never needed here: signatures come from a :data:`SignDigest` callback that is
handed the already hashed ``pol`` (what KMS "sign a digest" APIs take). Every returned signature is
verified against the public key before it is written, so a remote signer using the wrong scheme
(PSS, another key) fails the build instead of producing a UKI that never unseals.

Hand-written on purpose, with :mod:`hashlib` and :mod:`cryptography` doing the cryptography: the PCR
extend arithmetic (two hashes) and the ``PolicyPCR`` digest (one hash over a 4-field TPM structure,
TPM 2.0 Part 3 §23.7). The Python TPM stack (``tpm2-pytss``) would need the C ``libtss2`` libraries
and, for a trial policy session, a TPM; that is also why systemd 252 could only sign with a TPM.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from common.errors import FactoryError
from worker.imager.signing import PCRSigner

__all__ = [
    "BANKS",
    "MEASURED_SECTIONS",
    "PCR_KERNEL_BOOT",
    "SUPPORTED_BANKS",
    "SYSTEMD_PHASES",
    "TALOS_PHASES",
    "Measurable",
    "PCRPolicyError",
    "SignDigest",
    "expected_pcr_values",
    "extend",
    "pcr_signer_callback",
    "pcrpkey_pem",
    "policy_pcr_digest",
    "public_key_fingerprint",
    "sign_pcr_policy",
]

#: The PCR systemd-stub measures the UKI into (``TPM2_PCR_KERNEL_BOOT``, Talos ``constants.UKIPCR``).
PCR_KERNEL_BOOT = 11

#: Sections systemd-stub measures, in the order it measures them (systemd ``src/fundamental/uki.h``
#: v257, Talos ``OrderedSections``); ``.pcrsig`` is left out, it is what is being computed.
MEASURED_SECTIONS = (
    ".linux",
    ".osrel",
    ".cmdline",
    ".initrd",
    ".ucode",
    ".splash",
    ".dtb",
    ".uname",
    ".sbat",
    ".pcrpkey",
    ".profile",
    ".dtbauto",
    ".hwids",
)

#: The phases Talos signs: the value after ``enter-initrd``, ``leave-initrd`` and ``enter-machined``
#: (``internal/pkg/secureboot.OrderedPhases``: only the last one has ``CalculateSignature``).
TALOS_PHASES = ("enter-initrd:leave-initrd:enter-machined",)

#: ``systemd-measure``'s default phases (initrd to the start of shutdown), for comparison.
SYSTEMD_PHASES = (
    "enter-initrd",
    "enter-initrd:leave-initrd",
    "enter-initrd:leave-initrd:sysinit",
    "enter-initrd:leave-initrd:sysinit:ready",
)

#: TPM algorithm ids of the banks (TPM 2.0 Part 2, ``TPM_ALG_ID``), in systemd's output order.
SUPPORTED_BANKS: Mapping[str, int] = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}

#: The banks Talos signs (``measure.GenerateSignedPCR``). systemd-measure's default adds sha1.
BANKS = ("sha256", "sha384", "sha512")

_HASHES: Mapping[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_TPM_CC_POLICY_PCR = 0x0000017F
_PCR_SELECT_SIZE = 3  # 24 PCRs, what every PC TPM has and what systemd and Talos select with
_CHUNK = 4 << 20

#: Signs a digest: ``(digest, bank)`` → raw signature, RSA PKCS #1 v1.5 with the bank's hash
#: (``digest`` is already ``H_bank(pol)``; ``bank`` is ``"sha256"``, ``"sha384"`` …).
SignDigest = Callable[[bytes, str], bytes]


class PCRPolicyError(FactoryError):
    """The PCR policy cannot be computed or signed (bad key, bank, section, signer); a 500."""

    status = 500


class Measurable(Protocol):
    """Section content given in pieces (:class:`worker.imager.uki.Section` is one)."""

    def chunks(self) -> Iterator[bytes]: ...


def extend(value: bytes, data_digest: bytes, bank: str) -> bytes:
    """One TPM2 PCR extend: ``H(value || data_digest)``."""
    return hashlib.new(bank, value + data_digest).digest()


def expected_pcr_values(
    sections: Mapping[str, bytes | Path | Measurable],
    phases: Sequence[str] = TALOS_PHASES,
    banks: Sequence[str] = BANKS,
) -> dict[str, dict[str, bytes]]:
    """PCR 11 per bank and phase as the stub and the phase extensions leave it: ``{bank: {phase: value}}``.

    ``sections`` maps section names (``.linux`` …) to their content, exactly the bytes the stub
    measures (a UKI section's VirtualSize bytes). Phases are colon-separated words, normalised and
    ordered like ``systemd-measure`` (empty words dropped, sorted, duplicates removed); the same for
    banks. Empty sections are skipped, as the stub and ``systemd-measure`` do (Talos' Go port would
    measure them; no Talos UKI has one).
    """
    banks = _banks(banks)
    base = _measure_sections(sections, banks)
    return {
        bank: {phase: _extend_phase(base[bank], phase, bank) for phase in _phases(phases)} for bank in banks
    }


def policy_pcr_digest(pcr_value: bytes, bank: str, pcr: int = PCR_KERNEL_BOOT) -> bytes:
    """The TPM2 ``PolicyPCR`` policy digest for ``pcr`` (of ``bank``) holding ``pcr_value``.

    ``H256(zeros || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H256(pcr_value))``, all big-endian,
    from an empty SHA-256 session, as ``tpm2_calculate_policy_pcr`` and go-tpm's calculator do.
    """
    alg_id = _bank_id(bank)
    if len(pcr_value) != hashlib.new(bank).digest_size:
        raise PCRPolicyError(
            f"a {bank} PCR value has {hashlib.new(bank).digest_size} bytes, not {len(pcr_value)}"
        )
    if not 0 <= pcr < 8 * _PCR_SELECT_SIZE:
        raise PCRPolicyError(f"PCR {pcr} is out of range")
    mask = bytearray(_PCR_SELECT_SIZE)
    mask[pcr >> 3] |= 1 << (pcr & 7)
    selection = struct.pack(">IHB", 1, alg_id, _PCR_SELECT_SIZE) + bytes(mask)
    command = struct.pack(">I", _TPM_CC_POLICY_PCR)
    return hashlib.sha256(bytes(32) + command + selection + hashlib.sha256(pcr_value).digest()).digest()


def public_key_fingerprint(public_key: bytes) -> bytes:
    """``pkfp``: SHA-256 of the key's DER PKCS #1 ``RSAPublicKey``; ``public_key`` is DER SPKI or PEM."""
    return hashlib.sha256(_rsa_public_key(public_key).public_bytes(*_PKCS1_DER)).digest()


def pcrpkey_pem(public_key: bytes) -> bytes:
    """The ``.pcrpkey`` section: the key as a ``PUBLIC KEY`` PEM (SPKI), as Talos writes it."""
    return _rsa_public_key(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_pcr_policy(
    sections: Mapping[str, bytes | Path | Measurable],
    public_key: bytes,
    sign: SignDigest,
    *,
    phases: Sequence[str] = TALOS_PHASES,
    banks: Sequence[str] = BANKS,
) -> bytes:
    """The ``.pcrsig`` section: the signed PCR 11 policies of ``sections``, compact JSON, no newline.

    ``public_key`` is the PCR key's public half (DER SPKI, as :attr:`PCRSigner.public_key`, or
    PEM); ``sign`` signs each policy. The defaults give what Talos writes (byte for byte, RSA PKCS #1
    v1.5 being deterministic); ``systemd-measure sign`` gives the same for the same banks and phases.
    """
    key = _rsa_public_key(public_key)
    pkfp = hashlib.sha256(key.public_bytes(*_PKCS1_DER)).hexdigest()
    values = expected_pcr_values(sections, phases, banks)
    document: dict[str, list[dict[str, object]]] = {}
    for bank, by_phase in values.items():
        entries = document.setdefault(bank, [])
        for value in by_phase.values():
            pol = policy_pcr_digest(value, bank)
            digest = hashlib.new(bank, pol).digest()
            signature = sign(digest, bank)
            _verify(key, signature, digest, bank)
            entries.append(
                {
                    "pcrs": [PCR_KERNEL_BOOT],
                    "pkfp": pkfp,
                    "pol": pol.hex(),
                    "sig": base64.b64encode(signature).decode("ascii"),
                }
            )
    return json.dumps(document, separators=(",", ":")).encode()


def pcr_signer_callback(signer: PCRSigner) -> SignDigest:
    """Adapts the imager's :class:`PCRSigner` seam: each bank's policy digest is made with that
    bank's hash, which is the hash name the signer is told (``sha256``, ``sha384``, ``sha512``)."""

    def sign(digest: bytes, bank: str) -> bytes:
        if bank not in ("sha256", "sha384", "sha512"):
            raise PCRPolicyError(f"the PCR signer signs SHA-2 digests only, not {bank}")
        return signer.sign_digest(digest, bank)

    return sign


# --------------------------------------------------------------------------------------------------

_PKCS1_DER = (serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def _bank_id(bank: str) -> int:
    try:
        return SUPPORTED_BANKS[bank]
    except KeyError:
        raise PCRPolicyError(f"unknown PCR bank {bank!r} (known: {', '.join(SUPPORTED_BANKS)})") from None


def _banks(banks: Sequence[str]) -> list[str]:
    wanted = {b.lower() for b in banks}
    for bank in wanted:
        _bank_id(bank)
    if not wanted:
        raise PCRPolicyError("no PCR bank selected")
    return [bank for bank in SUPPORTED_BANKS if bank in wanted]


def _phases(phases: Sequence[str]) -> list[str]:
    """``systemd-measure``'s ``normalize_phase`` and ``strv_sort_uniq``."""
    normalized = sorted({":".join(word for word in phase.split(":") if word) for phase in phases})
    if not normalized:
        raise PCRPolicyError("no boot phase selected")
    return normalized


def _chunks(data: bytes | Path | Measurable) -> Iterable[bytes]:
    if isinstance(data, bytes):
        return (data,)
    if isinstance(data, Path):
        return _file_chunks(data)
    return data.chunks()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _measure_sections(
    sections: Mapping[str, bytes | Path | Measurable], banks: Sequence[str]
) -> dict[str, bytes]:
    """PCR 11 per bank after the stub measured ``sections`` (each read once, for all banks)."""
    unknown = sorted(set(sections) - set(MEASURED_SECTIONS))
    if unknown:
        raise PCRPolicyError(f"systemd-stub does not measure {', '.join(unknown)}")
    values = {bank: bytes(hashlib.new(bank).digest_size) for bank in banks}
    for name in MEASURED_SECTIONS:
        if name not in sections:
            continue
        hashers = {bank: hashlib.new(bank) for bank in banks}
        size = 0
        for chunk in _chunks(sections[name]):
            size += len(chunk)
            for hasher in hashers.values():
                hasher.update(chunk)
        if size == 0:  # the stub skips empty sections
            continue
        label = name.encode() + b"\0"
        for bank, hasher in hashers.items():
            value = extend(values[bank], hashlib.new(bank, label).digest(), bank)
            values[bank] = extend(value, hasher.digest(), bank)
    return values


def _extend_phase(value: bytes, phase: str, bank: str) -> bytes:
    for word in phase.split(":"):
        if word:
            value = extend(value, hashlib.new(bank, word.encode()).digest(), bank)
    return value


def _rsa_public_key(public_key: bytes) -> rsa.RSAPublicKey:
    try:
        if public_key.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(public_key)
        else:
            key = serialization.load_der_public_key(public_key)
    except ValueError as exc:
        raise PCRPolicyError(f"the PCR public key cannot be read: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise PCRPolicyError(
            f"the PCR key must be RSA (Talos unseals with RSA only), not {type(key).__name__}"
        )
    return key


def _verify(key: rsa.RSAPublicKey, signature: bytes, digest: bytes, bank: str) -> None:
    try:
        key.verify(signature, digest, padding.PKCS1v15(), Prehashed(_HASHES[bank]()))
    except InvalidSignature:
        raise PCRPolicyError(
            f"the PCR signer's {bank} signature does not verify with the PCR public key "
            "(expected RSA PKCS #1 v1.5 by the same key)"
        ) from None
