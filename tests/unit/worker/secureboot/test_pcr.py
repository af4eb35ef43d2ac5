"""PCR 11 prediction and the signed ``.pcrsig`` policy, checked against systemd's own tools and Talos.

References: Debian bookworm's ``systemd-measure`` (systemd 252: ``calculate`` needs nothing else;
``sign`` computes the policy on a TPM, here swtpm through ``libtss2-tcti-swtpm``), and the vectors
of ``siderolabs/talos@v1.14.0-rc.1:internal/pkg/measure`` (``measure_test.go``,
``internal/pcr/bank_data_test.go``), whose ``pol`` values need no key. systemd 252's CLI has no
``--ucode/--uname/--sbat/--profile/--dtbauto/--hwids``: those sections are covered by the Talos vector.
"""

from __future__ import annotations

import base64
import ctypes.util
import hashlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from worker.imager.uki import Section
from worker.secureboot import pcr

SYSTEMD_MEASURE = Path("/usr/lib/systemd/systemd-measure")
ALL_BANKS = ("sha1", "sha256", "sha384", "sha512")
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
#: Every section systemd 252's ``systemd-measure`` takes (``--linux`` … ``--pcrpkey``).
SD252_SECTIONS = (".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey")

needs_measure = pytest.mark.skipif(not SYSTEMD_MEASURE.exists(), reason="systemd-measure not installed")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def local_signer(key: rsa.RSAPrivateKey) -> pcr.SignDigest:
    def sign(digest: bytes, bank: str) -> bytes:
        return key.sign(digest, padding.PKCS1v15(), Prehashed(HASHES[bank]()))

    return sign


@pytest.fixture()
def sections(tmp_path: Path, key: rsa.RSAPrivateKey) -> dict[str, Path]:
    content = {
        ".linux": b"MZ not really a kernel\0" * 5000,
        ".osrel": b'NAME="Talos"\nID=talos\nVERSION_ID=v1.12.4\n',
        ".cmdline": b"console=ttyS0 talos.platform=metal",
        ".initrd": bytes(range(256)) * 4000,
        ".splash": b"BM fake splash",
        ".dtb": b"\xd0\x0d\xfe\xed",
        ".pcrpkey": pcr.pcrpkey_pem(spki(key)),
    }
    paths = {}
    for name, data in content.items():
        path = tmp_path / name.lstrip(".")
        path.write_bytes(data)
        paths[name] = path
    return paths


def measure_args(sections: dict[str, Path]) -> list[str]:
    return [f"--{name.lstrip('.')}={path}" for name, path in sections.items()]


# --------------------------------------------------------------------------------------------------
# systemd-measure calculate


@needs_measure
@pytest.mark.parametrize("which", [SD252_SECTIONS, (".linux", ".cmdline"), (".linux", ".initrd", ".pcrpkey")])
def test_pcr_values_match_systemd_measure_calculate(
    sections: dict[str, Path], which: tuple[str, ...]
) -> None:
    chosen = {name: sections[name] for name in which}
    phases = [*pcr.SYSTEMD_PHASES, *pcr.TALOS_PHASES]
    out = subprocess.run(
        [
            str(SYSTEMD_MEASURE),
            "calculate",
            "--json=short",
            *(f"--phase={p}" for p in phases),
            *measure_args(chosen),
        ],
        capture_output=True,
        check=True,
    ).stdout
    theirs = json.loads(out)
    ours = pcr.expected_pcr_values(chosen, phases, ALL_BANKS)  # 252's default banks: all four
    assert list(theirs) == list(ours) == list(ALL_BANKS)
    for bank, entries in theirs.items():
        assert [e["phase"] for e in entries] == list(ours[bank])
        assert all(e["pcr"] == 11 for e in entries)
        assert [e["hash"] for e in entries] == [v.hex() for v in ours[bank].values()]


@needs_measure
def test_empty_sections_are_skipped_like_the_stub(sections: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with_empty = {".linux": sections[".linux"], ".osrel": empty}
    out = subprocess.run(
        [str(SYSTEMD_MEASURE), "calculate", "--json=short", "--bank=sha256", *measure_args(with_empty)],
        capture_output=True,
        check=True,
    ).stdout
    theirs = {e["phase"]: e["hash"] for e in json.loads(out)["sha256"]}
    ours = pcr.expected_pcr_values(with_empty, pcr.SYSTEMD_PHASES, ["sha256"])["sha256"]
    assert theirs == {phase: value.hex() for phase, value in ours.items()}
    assert (
        ours
        == pcr.expected_pcr_values({".linux": sections[".linux"]}, pcr.SYSTEMD_PHASES, ["sha256"])["sha256"]
    )


# --------------------------------------------------------------------------------------------------
# systemd-measure sign (systemd 252 computes PolicyPCR in a TPM trial session: swtpm stands in)


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free TCP ports")


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away software TPM; yields systemd's ``--tpm2-device=`` value for it."""
    if shutil.which("swtpm") is None or not SYSTEMD_MEASURE.exists():
        pytest.skip("swtpm or systemd-measure not installed")
    libraries = ("tss2-esys", "tss2-rc", "tss2-mu", "tss2-tcti-swtpm")  # what systemd 252 dlopens
    if not all(ctypes.util.find_library(name) for name in libraries):
        pytest.skip("libtss2-esys, -rc, -mu or -tcti-swtpm not installed (systemd 252 signs on a TPM)")
    state = tmp_path_factory.mktemp("swtpm")
    port = _free_port_pair()
    proc = subprocess.Popen(
        [
            "swtpm",
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={state}",
            "--server",
            f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--flags",
            "not-need-init,startup-clear",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("swtpm did not start")
                time.sleep(0.05)
        yield f"swtpm:host=127.0.0.1,port={port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("banks", "phases"),
    [
        (pcr.BANKS, pcr.TALOS_PHASES),  # what Talos writes
        (ALL_BANKS, [*pcr.SYSTEMD_PHASES, *pcr.TALOS_PHASES, "enter-initrd::leave-initrd:", "enter-initrd"]),
    ],
)
def test_pcrsig_matches_systemd_measure_sign(
    swtpm: str,
    sections: dict[str, Path],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
    banks: tuple[str, ...],
    phases: list[str],
) -> None:
    private = tmp_path / "pcr.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = tmp_path / "pcr.pub"
    public.write_bytes(pcr.pcrpkey_pem(spki(key)))
    out = subprocess.run(
        [
            str(SYSTEMD_MEASURE),
            "sign",
            f"--tpm2-device={swtpm}",
            f"--private-key={private}",
            f"--public-key={public}",
            "--json=short",
            *(f"--bank={b}" for b in banks),
            *(f"--phase={p}" for p in phases),
            *measure_args(sections),
        ],
        capture_output=True,
        check=True,
    ).stdout
    ours = pcr.sign_pcr_policy(sections, spki(key), local_signer(key), phases=phases, banks=banks)
    # the same pol, pkfp and (PKCS #1 v1.5 being deterministic) signature bytes, in the same order
    assert ours == out.rstrip(b"\n")


# --------------------------------------------------------------------------------------------------
# Talos' vectors (pol depends on the sections and phases only, not on the key)


def test_talos_measure_vector_covers_every_section() -> None:
    # measure_test.go: each of OrderedSections() holding its own name, Talos' phases and banks
    data = {name: name.encode() for name in pcr.MEASURED_SECTIONS}
    values = pcr.expected_pcr_values(data)
    pols = {
        bank: pcr.policy_pcr_digest(by_phase[pcr.TALOS_PHASES[0]], bank).hex()
        for bank, by_phase in values.items()
    }
    assert pols == {
        "sha256": "c0c4f61f8ac39267a7638cde8029b82a0ccd378b2acbfdffb77ee1f0f9d464ec",
        "sha384": "e8f6311e36f9ee038df65255ae7c471d1d1f91ce742b98a152be72337f6c937d",
        "sha512": "207a8217158f9cc521dca50358a593dc61ed9308ef27da9df4ef64d634309160",
    }


def test_talos_bank_data_vector() -> None:
    # bank_data_test.go (its policy selects PCR 11 whatever "pcrs" says)
    values = pcr.expected_pcr_values(
        {".initrd": b"aaaa\n", ".linux": b"bbbb\n", ".dtb": b"cccc\n"}, banks=["sha256"]
    )
    pol = pcr.policy_pcr_digest(values["sha256"][pcr.TALOS_PHASES[0]], "sha256")
    assert pol.hex() == "a1c9d366451c82969238eb82a5282f84b6a3d499e540430ecf792083155225dd"


# --------------------------------------------------------------------------------------------------
# format, signatures, keys, errors


def test_pcrsig_format_and_signatures_verify(sections: dict[str, Path], key: rsa.RSAPrivateKey) -> None:
    seen: list[tuple[bytes, str]] = []
    sign = local_signer(key)

    def recording(digest: bytes, bank: str) -> bytes:
        seen.append((digest, bank))
        return sign(digest, bank)

    raw = pcr.sign_pcr_policy(sections, spki(key), recording)
    assert not raw.endswith(b"\n") and b" " not in raw
    doc = json.loads(raw)
    assert list(doc) == ["sha256", "sha384", "sha512"]
    pkfp = hashlib.sha256(
        key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    ).hexdigest()
    assert pcr.public_key_fingerprint(spki(key)).hex() == pkfp
    values = pcr.expected_pcr_values(sections)
    for bank, entries in doc.items():
        (entry,) = entries  # one phase: enter-initrd:leave-initrd:enter-machined
        assert list(entry) == ["pcrs", "pkfp", "pol", "sig"]
        assert entry["pcrs"] == [11] and entry["pkfp"] == pkfp
        pol = bytes.fromhex(entry["pol"])
        assert pol == pcr.policy_pcr_digest(values[bank][pcr.TALOS_PHASES[0]], bank)
        # the signature over the policy digest with the bank's hash, checked by cryptography itself
        key.public_key().verify(base64.b64decode(entry["sig"]), pol, padding.PKCS1v15(), HASHES[bank]())
    assert [bank for _, bank in seen] == ["sha256", "sha384", "sha512"]
    assert all(len(digest) == hashlib.new(bank).digest_size for digest, bank in seen)


def test_uki_sections_and_pem_key_are_accepted(sections: dict[str, Path], key: rsa.RSAPrivateKey) -> None:
    as_sections = {name: Section(name, path) for name, path in sections.items()}
    as_bytes = {name: path.read_bytes() for name, path in sections.items()}
    pem = pcr.pcrpkey_pem(spki(key))
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n") and pem.endswith(b"-----END PUBLIC KEY-----\n")
    signed = pcr.sign_pcr_policy(as_sections, pem, local_signer(key))
    assert signed == pcr.sign_pcr_policy(as_bytes, spki(key), local_signer(key))
    assert signed == pcr.sign_pcr_policy(sections, spki(key), local_signer(key))


def test_pcr_signer_seam_signs_every_talos_bank(sections: dict[str, Path], key: rsa.RSAPrivateKey) -> None:
    class Signer:
        @property
        def public_key(self) -> bytes:
            return spki(key)

        def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
            return key.sign(digest, padding.PKCS1v15(), Prehashed(HASHES[hash_name]()))

    signer = Signer()
    callback = pcr.pcr_signer_callback(signer)
    doc = json.loads(pcr.sign_pcr_policy(sections, signer.public_key, callback))
    assert list(doc) == ["sha256", "sha384", "sha512"]
    assert pcr.sign_pcr_policy(sections, signer.public_key, callback) == pcr.sign_pcr_policy(
        sections, spki(key), local_signer(key)
    )
    with pytest.raises(pcr.PCRPolicyError, match="SHA-2 digests only"):
        pcr.sign_pcr_policy(sections, signer.public_key, callback, banks=["sha1"])


def test_a_signature_that_does_not_verify_fails(sections: dict[str, Path], key: rsa.RSAPrivateKey) -> None:
    def pss(digest: bytes, bank: str) -> bytes:
        return key.sign(
            digest,
            padding.PSS(padding.MGF1(HASHES[bank]()), padding.PSS.MAX_LENGTH),
            Prehashed(HASHES[bank]()),
        )

    with pytest.raises(pcr.PCRPolicyError, match="does not verify"):
        pcr.sign_pcr_policy(sections, spki(key), pss)
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(pcr.PCRPolicyError, match="does not verify"):
        pcr.sign_pcr_policy(sections, spki(key), local_signer(other))


def test_bad_inputs_are_refused(sections: dict[str, Path], key: rsa.RSAPrivateKey) -> None:
    sign = local_signer(key)
    with pytest.raises(pcr.PCRPolicyError, match=r"does not measure \.pcrsig"):
        pcr.expected_pcr_values({".linux": b"k", ".pcrsig": b"{}"})
    with pytest.raises(pcr.PCRPolicyError, match="unknown PCR bank 'md5'"):
        pcr.expected_pcr_values({".linux": b"k"}, banks=["md5"])
    with pytest.raises(pcr.PCRPolicyError, match="no boot phase"):
        pcr.expected_pcr_values({".linux": b"k"}, phases=[])
    with pytest.raises(pcr.PCRPolicyError, match="must be RSA"):
        ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        der = ec_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        pcr.sign_pcr_policy(sections, der, sign)
    with pytest.raises(pcr.PCRPolicyError, match="cannot be read"):
        pcr.sign_pcr_policy(sections, b"not a key", sign)
    with pytest.raises(pcr.PCRPolicyError, match="32 bytes"):
        pcr.policy_pcr_digest(b"short", "sha256")
