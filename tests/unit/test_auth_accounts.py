"""Identity → POSIX account, against this machine's real passwd (nothing is created)."""

from __future__ import annotations

import pwd

import pytest

from vizdesk.auth import accounts
from vizdesk.auth.accounts import AccountResolver, check_account, valid_username
from vizdesk.auth.types import AuthError
from vizdesk.config import AuthConfig


def denied(cfg: AuthConfig, user: str) -> AuthError:
    with pytest.raises(AuthError) as ei:
        check_account(cfg, user)
    assert (ei.value.status, ei.value.code) == (403, "account_denied")
    return ei.value


def existing(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no local account {name!r} here")


def test_root_never() -> None:
    denied(AuthConfig(), "root")
    # even when the deny-list and min_uid would let it through
    denied(AuthConfig(min_uid=0, denied_users=[]), "root")


def test_uid_zero_never_even_under_another_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second uid-0 account ("toor") with an ordinary group is still refused."""
    fake = pwd.struct_passwd(("toor", "x", 0, 100, "", "/root", "/bin/sh"))
    monkeypatch.setattr(accounts.pwd, "getpwnam", lambda name: fake)
    monkeypatch.setattr(accounts, "_own_account", lambda: (4242, "vizdesk"))
    denied(AuthConfig(min_uid=0, denied_users=[]), "toor")


def test_primary_group_zero_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = pwd.struct_passwd(("carol", "x", 2001, 0, "", "/home/carol", "/bin/sh"))
    monkeypatch.setattr(accounts.pwd, "getpwnam", lambda name: fake)
    denied(AuthConfig(), "carol")


def test_denied_users() -> None:
    existing("daemon")
    denied(AuthConfig(min_uid=1, denied_users=["daemon"]), "daemon")
    denied(AuthConfig(), "nobody")  # in the default deny-list


def test_unknown_user() -> None:
    err = denied(AuthConfig(), "no-such-user-vz")
    assert "no local account" in err.message


def test_uid_below_min_uid() -> None:
    pw = existing("daemon")  # uid 1 on Debian
    err = denied(AuthConfig(min_uid=1000), "daemon")
    assert "min_uid" in err.message
    acct = check_account(AuthConfig(min_uid=1, denied_users=[]), "daemon")
    assert (acct.name, acct.uid, acct.gid, acct.home) == ("daemon", pw.pw_uid, pw.pw_gid, pw.pw_dir)


def test_alice_allowed() -> None:
    pw = existing("alice")
    acct = check_account(AuthConfig(), "alice")
    assert acct.uid == pw.pw_uid and acct.uid >= 1000


def test_own_account_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    pw = existing("daemon")
    monkeypatch.setattr(accounts, "_own_account", lambda: (pw.pw_uid, "daemon"))
    denied(AuthConfig(min_uid=1, denied_users=[]), "daemon")


@pytest.mark.parametrize(
    "name", ["", "al ice", "alice;id", "../etc", "-rf", "a" * 33, "ålice", "alice\n"]
)
def test_malformed_names(name: str) -> None:
    assert not valid_username(name)
    denied(AuthConfig(min_uid=0, denied_users=[]), name)


@pytest.mark.parametrize("name", ["alice", "bob_2", "_svc", "a.b-c", "Alice"])
def test_wellformed_names(name: str) -> None:
    assert valid_username(name)


async def test_resolver_caches_and_runs_off_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    existing("daemon")
    calls: list[str] = []
    real = accounts.check_account

    def counting(cfg: AuthConfig, user: str) -> accounts.PosixAccount:
        calls.append(user)
        return real(cfg, user)

    monkeypatch.setattr(accounts, "check_account", counting)
    r = AccountResolver(AuthConfig(min_uid=1, denied_users=[]))
    a1 = await r.resolve("daemon")
    a2 = await r.resolve("daemon")
    assert a1 == a2 and calls == ["daemon"]
    for _ in range(2):
        with pytest.raises(AuthError):
            await r.resolve("no-such-user-vz")
    assert calls == ["daemon", "no-such-user-vz"]  # negative result cached too
    with pytest.raises(AuthError):
        await r.resolve("Bad;Name")
    assert calls == ["daemon", "no-such-user-vz"]  # malformed names never looked up
    r.clear()
    await r.resolve("daemon")
    assert calls[-1] == "daemon" and len(calls) == 3
