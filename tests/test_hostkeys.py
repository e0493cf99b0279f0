"""known_hosts reading and writing (tcpskim.hostkeys): tolerant of lines paramiko cannot
parse, text-level and atomic when writing. No SSH server: handshakes run in-process over a
socketpair."""

from __future__ import annotations

import os
import socket
import stat
import threading

import paramiko
import pytest
from paramiko.hostkeys import InvalidHostKey

from tcpskim.fleet import _AcceptNew
from tcpskim.hostkeys import load_known_hosts, remember

KA = paramiko.ECDSAKey.generate()          # a.example
KA_RSA = paramiko.RSAKey.generate(1024)    # a.example and its address, second key type
KB = paramiko.ECDSAKey.generate()          # [b.example]:2222
KH = paramiko.ECDSAKey.generate()          # hashed.example (hashed entry)
KNEW = paramiko.ECDSAKey.generate()        # what a reinstalled host offers
# A key type paramiko does not know (from_line returns None for it).
SK = ("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAu3Q4jTLpk0P5vHOxC1"
      "DbC8XzMu4YoE3eh+2sT2T6pyAAAABHNzaDo=")


def line(names: str, key: paramiko.PKey, tail: str = "") -> bytes:
    return f"{names} {key.get_name()} {key.get_base64()}{tail}\n".encode()


HASHED_H = paramiko.HostKeys.hash_host("hashed.example")
HASHED_A = paramiko.HostKeys.hash_host("a.example")

L_COMMENT = b"# managed by hand, keep me\n"
L_CA = b"@cert-authority *.example ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n"
L_REVOKED = b"@revoked a.example " + f"{KA.get_name()} {KA.get_base64()}".encode() + b"\n"
L_HASHED = line(HASHED_H, KH)
L_SK = f"sk.example {SK}\n".encode()
L_ODD = b"this line is not a key\n"
L_BLANK = b"\n"
L_A = line("a.example", KA, "  # trailing comment")
L_B = line("[b.example]:2222", KB)


def write(path, *lines: bytes) -> bytes:
    data = b"".join(lines)
    path.write_bytes(data)
    return data


@pytest.fixture
def kh(tmp_path):
    p = tmp_path / "ssh" / "known_hosts"
    p.parent.mkdir()
    return p


def all_entries(hk: paramiko.HostKeys) -> dict[str, dict[str, bytes]]:
    return {name: {t: k.asbytes() for t, k in hk[name].items()} for name in hk}


# --- loading ---------------------------------------------------------------------------------
def test_loader_skips_lines_paramiko_rejects(kh):
    write(kh, L_COMMENT, L_CA, L_HASHED, L_SK, L_ODD, L_BLANK, L_A, L_REVOKED, L_B)
    with pytest.raises(InvalidHostKey):  # the defect: paramiko's own loader gives up on the file
        paramiko.HostKeys().load(str(kh))

    hk = load_known_hosts(str(kh))

    assert all_entries(hk) == {
        HASHED_H: {KH.get_name(): KH.asbytes()},
        "a.example": {KA.get_name(): KA.asbytes()},
        "[b.example]:2222": {KB.get_name(): KB.asbytes()},
    }
    assert hk.check("hashed.example", KH)  # the hashed entry matches its plain name
    assert hk.lookup("sk.example") is None
    assert hk.lookup("*.example") is None  # @cert-authority not taken as a host entry


def test_loader_missing_file_is_empty(tmp_path):
    assert len(load_known_hosts(str(tmp_path / "nope"))) == 0


def test_loader_first_line_wins_and_runs_of_blanks(kh):
    other = paramiko.ECDSAKey.generate()
    write(kh, f"a.example   {KA.get_name()}\t{KA.get_base64()}\n".encode(), line("a.example", other))
    hk = load_known_hosts(str(kh))
    assert hk.check("a.example", KA)
    assert not hk.check("a.example", other)


def test_loader_drops_malformed_hashed_pattern(kh):
    # paramiko would raise on every lookup while comparing names with this pattern
    write(kh, line("|1|not-base64!|xx", KB), L_A)
    hk = load_known_hosts(str(kh))
    assert hk.lookup("zzz") is None
    assert hk.check("a.example", KA)
    assert list(hk.keys()) == ["a.example"]


def test_loader_fills_client_host_keys_and_changed_key_is_refused(kh):
    write(kh, L_COMMENT, L_CA, L_SK, L_A, L_B)
    client = paramiko.SSHClient()
    load_known_hosts(str(kh), into=client.get_host_keys())
    hk = client.get_host_keys()
    assert hk.check("a.example", KA) is True
    assert hk.check("a.example", KNEW) is False
    assert hk.check("[b.example]:2222", KB) is True
    assert hk.check("[b.example]:2222", KA) is False
    assert hk.check("b.example", KB) is False  # port 22 name is a different entry


# --- the client's verdicts on a real handshake (in-process server over a socketpair) ------------
def handshake(client: paramiko.SSHClient, hostname: str, port: int, server_key: paramiko.PKey):
    a, b = socket.socketpair()
    t = paramiko.Transport(b)
    t.add_server_key(server_key)

    def serve():
        try:
            t.start_server(server=paramiko.ServerInterface())
        except (paramiko.SSHException, EOFError, OSError):
            pass  # the client hangs up once it has judged the host key

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        client.connect(hostname, port=port, sock=a, look_for_keys=False, allow_agent=False,
                       timeout=20, banner_timeout=20, auth_timeout=20)
    finally:
        client.close()
        t.close()
        a.close()
        th.join(20)


def client_for(kh, policy) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    load_known_hosts(str(kh), into=c.get_host_keys())  # what Fleet.connection does
    c.set_missing_host_key_policy(policy)
    return c


def test_handshake_changed_key_raises_bad_host_key(kh):
    write(kh, L_COMMENT, L_CA, L_SK, L_ODD, L_A, L_B)
    with pytest.raises(paramiko.BadHostKeyException) as ei:
        handshake(client_for(kh, paramiko.RejectPolicy()), "b.example", 2222, KNEW)
    assert ei.value.key.asbytes() == KNEW.asbytes()
    assert ei.value.expected_key.asbytes() == KB.asbytes()


def test_handshake_known_key_passes_and_unknown_is_rejected(kh):
    write(kh, L_COMMENT, L_CA, L_SK, L_A, L_B)
    # the right key gets past host key checking to authentication (we offer none)
    with pytest.raises(paramiko.SSHException, match="No authentication methods available"):
        handshake(client_for(kh, paramiko.RejectPolicy()), "b.example", 2222, KB)
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        handshake(client_for(kh, paramiko.RejectPolicy()), "c.example", 22, KNEW)


def test_handshake_accept_new_appends_and_changed_key_still_refused(kh):
    before = write(kh, L_COMMENT, L_CA, L_HASHED, L_SK, L_A, L_B)
    lock = threading.Lock()
    with pytest.raises(paramiko.SSHException, match="No authentication methods available"):
        handshake(client_for(kh, _AcceptNew(str(kh), lock)), "c.example", 2200, KNEW)
    assert kh.read_bytes() == before + line("[c.example]:2200", KNEW)
    with pytest.raises(paramiko.BadHostKeyException):
        handshake(client_for(kh, _AcceptNew(str(kh), lock)), "a.example", 22, KNEW)
    assert kh.read_bytes() == before + line("[c.example]:2200", KNEW)


# --- writing ---------------------------------------------------------------------------------
def test_remember_replace_changes_only_that_hosts_lines(kh):
    lines = [L_COMMENT, L_CA, L_REVOKED, L_HASHED, line(HASHED_A, KA), L_SK, L_ODD, L_BLANK,
             L_A, line("a.example,10.0.0.1", KA_RSA), line("aa.example,[a.example]:22", KA),
             L_B, b"sk-only a.example-not " + SK.encode() + b"\n", b"# last line, no newline"]
    write(kh, *lines)

    assert remember(str(kh), "a.example", KNEW, replace=True) is True

    dropped = {line(HASHED_A, KA), L_A, line("a.example,10.0.0.1", KA_RSA)}
    kept = [ln for ln in lines if ln not in dropped]
    assert len(kept) == len(lines) - 3
    assert kh.read_bytes() == b"".join(kept) + b"\n" + line("a.example", KNEW)
    hk = load_known_hosts(str(kh))
    assert hk.check("a.example", KNEW)
    assert all_entries(hk)["a.example"] == {KNEW.get_name(): KNEW.asbytes()}  # the old RSA key is gone
    assert hk.check("hashed.example", KH) and hk.check("[b.example]:2222", KB)
    assert hk.check("aa.example", KA)  # '[a.example]:22' is not the name 'a.example'


def test_remember_replace_drops_unparseable_key_of_that_host(kh):
    before = write(kh, L_COMMENT, f"a.example {SK}\n".encode(), L_B)
    remember(str(kh), "a.example", KNEW, replace=True)
    assert kh.read_bytes() == L_COMMENT + L_B + line("a.example", KNEW)
    assert before != kh.read_bytes()


def test_remember_append_keeps_everything(kh):
    before = write(kh, L_COMMENT, L_CA, L_HASHED, L_SK, L_ODD, L_A, L_B)
    assert remember(str(kh), "a.example", KNEW) is True  # no replace: the old key stays too
    assert kh.read_bytes() == before + line("a.example", KNEW)
    assert remember(str(kh), "[c.example]:2200", KB) is True
    after = before + line("a.example", KNEW) + line("[c.example]:2200", KB)
    assert kh.read_bytes() == after
    assert remember(str(kh), "[c.example]:2200", KB) is False  # already trusted: not added twice
    assert remember(str(kh), "hashed.example", KH) is False
    assert kh.read_bytes() == after


def test_remember_keeps_mode_and_leaves_no_temp_files(kh):
    write(kh, L_COMMENT, L_A)
    os.chmod(kh, 0o640)
    remember(str(kh), "a.example", KNEW, replace=True)
    assert stat.S_IMODE(os.stat(kh).st_mode) == 0o640
    assert sorted(os.listdir(kh.parent)) == ["known_hosts"]
    os.chmod(kh, 0o604)
    remember(str(kh), "b.example", KB)
    assert stat.S_IMODE(os.stat(kh).st_mode) == 0o604
    assert sorted(os.listdir(kh.parent)) == ["known_hosts"]


def test_remember_creates_file_and_private_parent(tmp_path):
    p = tmp_path / "new" / "known_hosts"
    assert remember(str(p), "a.example", KA) is True
    assert p.read_bytes() == line("a.example", KA)
    assert stat.S_IMODE(os.stat(p.parent).st_mode) == 0o700 & ~_umask()  # mkdir applies the umask
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


def test_remember_writes_through_symlink(kh, tmp_path):
    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    before = write(real, L_COMMENT, L_B)
    kh.symlink_to(real)
    remember(str(kh), "a.example", KA)
    assert kh.is_symlink()
    assert real.read_bytes() == before + line("a.example", KA)


def test_remember_failed_write_leaves_file_alone(kh, monkeypatch):
    before = write(kh, L_COMMENT, L_A)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        remember(str(kh), "a.example", KNEW, replace=True)
    assert kh.read_bytes() == before
    assert sorted(os.listdir(kh.parent)) == ["known_hosts"]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
