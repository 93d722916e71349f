"""JWT verification: every attack the security issue lists fails, every legitimate shape passes.

Keys are generated here with ``cryptography``; Redis is a tiny in-memory stand-in (the real
Redis deny-list is exercised in tests/integration/test_auth_revocation_redis.py). Account
mapping is stubbed in the token tests and real (``pwd``) in the account tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from vizdesk.auth.accounts import PosixAccount
from vizdesk.auth.jwt_auth import JwtAuthenticator, parse_groups
from vizdesk.auth.tokens import mint_token
from vizdesk.auth.types import AuthError
from vizdesk.config import AuthConfig, ConfigError
from vizdesk.contract.keys import Keys

SECRET = "s3cret-for-unit-tests-0123456789abcdef"


class FakeRedis:
    """Just enough of redis.asyncio.Redis for the deny-list lookups."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def exists(self, *names: str) -> int:
        return sum(1 for n in names if n in self.data)

    async def set(self, name: str, value: Any, ex: int | None = None) -> bool:
        self.data[name] = value
        return True


class StubAccounts:
    """Every well-formed user maps to uid 2000 (the token tests are not about accounts)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def resolve(self, user: str) -> PosixAccount:
        self.calls.append(user)
        return PosixAccount(user, 2000, 2000, f"/home/{user}")

    def clear(self) -> None:
        pass


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """A token assembled by hand; ``sign(signing_input) -> bytes`` or an empty signature."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(sig)}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "groups": ["staff"], "exp": now + 600, "iat": now}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    p = tmp_path / "hs.secret"
    p.write_text(SECRET + "\n")
    return str(p)


@pytest.fixture
def key_files(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey):
    old = tmp_path / "old-rsa.pem"
    old.write_bytes(pem_public(rsa_key))
    new = tmp_path / "new-ec.pem"
    new.write_bytes(pem_public(ec_key))
    return {"old": str(old), "new": str(new)}


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIZDESK_JWT_SECRET", raising=False)


def make_auth(cfg: AuthConfig, redis: FakeRedis | None = None) -> JwtAuthenticator:
    a = JwtAuthenticator(cfg, redis or FakeRedis(), Keys("t:"))  # type: ignore[arg-type]
    a.accounts = StubAccounts()  # type: ignore[assignment]
    return a


async def expect(a: JwtAuthenticator, token: str, status: int, code: str) -> AuthError:
    with pytest.raises(AuthError) as ei:
        await a.authenticate(token)
    assert (ei.value.status, ei.value.code) == (status, code), ei.value.message
    return ei.value


# -- HS256 basics -------------------------------------------------------------------------


async def test_hs256_valid(secret_file: str) -> None:
    cfg = AuthConfig(hs256_secret_file=secret_file, admin_groups=["admins"])
    a = make_auth(cfg)
    ident = await a.authenticate(jwt.encode(claims(jti="j1"), SECRET, algorithm="HS256"))
    assert ident.user == "alice" and ident.groups == ("staff",) and ident.uid == 2000
    assert ident.jti == "j1" and not ident.is_admin
    admin = await a.authenticate(
        jwt.encode(claims(groups=["x", "admins"]), SECRET, algorithm="HS256")
    )
    assert admin.is_admin


async def test_wrong_secret(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file))
    await expect(a, jwt.encode(claims(), SECRET + "x", algorithm="HS256"), 401, "invalid_token")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_refused(secret_file: str, alg: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file))
    await expect(a, forge({"alg": alg, "typ": "JWT"}, claims()), 401, "invalid_token")
    # and with a (meaningless) signature attached
    await expect(a, forge({"alg": alg}, claims(), lambda m: b"x" * 32), 401, "invalid_token")


async def test_alg_not_in_allow_list(secret_file: str, rsa_key: rsa.RSAPrivateKey) -> None:
    # HS256 with a valid signature, but the site allows RS256 only.
    cfg = AuthConfig(algorithms=["RS256"], hs256_secret_file=secret_file)
    a = make_auth(cfg)
    await expect(a, jwt.encode(claims(), SECRET, algorithm="HS256"), 401, "invalid_token")
    # Algorithms PyJWT knows but vizdesk never accepts.
    for alg in ("HS512", "RS512", "PS256"):
        key: Any = SECRET if alg.startswith("HS") else rsa_key
        token = jwt.encode(claims(), key, algorithm=alg)
        await expect(a, token, 401, "invalid_token")


async def test_rs256_refused_when_only_hs256_allowed(
    secret_file: str, key_files: dict[str, str], rsa_key: rsa.RSAPrivateKey
) -> None:
    # A valid RS256 token from a configured key, but the allow-list says HS256 only.
    a = make_auth(
        AuthConfig(algorithms=["HS256"], hs256_secret_file=secret_file, public_key_files=key_files)
    )
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "old"})
    await expect(a, token, 401, "invalid_token")
    ok = make_auth(AuthConfig(algorithms=["HS256", "RS256"], public_key_files=key_files))
    assert (await ok.authenticate(token)).user == "alice"


def hs_sign_with(key: bytes):
    return lambda m: hmac.new(key, m, hashlib.sha256).digest()


@pytest.mark.parametrize("with_secret", [True, False])
async def test_algorithm_confusion_public_key_as_hmac_secret(
    tmp_path: Path, secret_file: str, key_files: dict[str, str], with_secret: bool
) -> None:
    """The classic attack: HS256 token whose HMAC key is the server's RS256 public key PEM."""
    cfg = AuthConfig(
        algorithms=["HS256", "RS256", "ES256"],
        hs256_secret_file=secret_file if with_secret else "",
        public_key_files=key_files,
    )
    a = make_auth(cfg)
    pem = Path(key_files["old"]).read_bytes()
    for kid in ("old", None):
        header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
        if kid:
            header["kid"] = kid
        for key in (pem, pem.strip()):
            token = forge(header, claims(), hs_sign_with(key))
            await expect(a, token, 401, "invalid_token")


def test_hs_secret_that_is_a_key_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    p = tmp_path / "secret"
    p.write_bytes(pem_public(rsa_key))
    with pytest.raises(ConfigError, match="not a secret"):
        make_auth(AuthConfig(hs256_secret_file=str(p)))


async def test_hs256_refused_without_secret() -> None:
    a = make_auth(AuthConfig(algorithms=["HS256"]))
    await expect(a, jwt.encode(claims(), SECRET, algorithm="HS256"), 401, "invalid_token")


# -- registered claims --------------------------------------------------------------------


async def test_expired(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file, leeway_seconds=5))
    old = int(time.time()) - 100
    token = jwt.encode(claims(exp=old, iat=old - 60), SECRET, algorithm="HS256")
    await expect(a, token, 401, "token_expired")


async def test_leeway(secret_file: str) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256")
    assert (
        await make_auth(AuthConfig(hs256_secret_file=secret_file, leeway_seconds=60)).authenticate(
            token
        )
    ).user == "alice"
    await expect(
        make_auth(AuthConfig(hs256_secret_file=secret_file, leeway_seconds=0)),
        token,
        401,
        "token_expired",
    )


async def test_missing_exp(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file))
    token = jwt.encode(claims(exp=None), SECRET, algorithm="HS256")
    err = await expect(a, token, 401, "invalid_token")
    assert "exp" in err.message


async def test_exp_not_a_number(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file))
    await expect(
        a, jwt.encode(claims(exp="tomorrow"), SECRET, algorithm="HS256"), 401, "invalid_token"
    )


async def test_not_yet_valid(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file, leeway_seconds=5))
    token = jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, algorithm="HS256")
    await expect(a, token, 401, "invalid_token")


async def test_too_long_lifetime(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file, max_token_lifetime_seconds=3600))
    token = jwt.encode(claims(exp=int(time.time()) + 7200), SECRET, algorithm="HS256")
    await expect(a, token, 401, "invalid_token")
    ok = jwt.encode(claims(exp=int(time.time()) + 1800), SECRET, algorithm="HS256")
    assert (await a.authenticate(ok)).user == "alice"


async def test_audience(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file, audience="vizdesk"))
    good = jwt.encode(claims(aud="vizdesk"), SECRET, algorithm="HS256")
    assert (await a.authenticate(good)).user == "alice"
    in_list = jwt.encode(claims(aud=["other", "vizdesk"]), SECRET, algorithm="HS256")
    assert (await a.authenticate(in_list)).user == "alice"
    await expect(
        a, jwt.encode(claims(aud="jupyter"), SECRET, algorithm="HS256"), 401, "invalid_token"
    )
    await expect(a, jwt.encode(claims(), SECRET, algorithm="HS256"), 401, "invalid_token")


async def test_issuer(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file, issuer="https://sso.example"))
    good = jwt.encode(claims(iss="https://sso.example"), SECRET, algorithm="HS256")
    assert (await a.authenticate(good)).user == "alice"
    await expect(
        a,
        jwt.encode(claims(iss="https://evil.example"), SECRET, algorithm="HS256"),
        401,
        "invalid_token",
    )
    await expect(a, jwt.encode(claims(), SECRET, algorithm="HS256"), 401, "invalid_token")


async def test_iss_aud_not_checked_when_not_configured(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file))
    token = jwt.encode(claims(iss="anyone", aud="anything"), SECRET, algorithm="HS256")
    assert (await a.authenticate(token)).user == "alice"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20000, "Bearer x.y.z"])
async def test_garbage(secret_file: str, token: str) -> None:
    await expect(make_auth(AuthConfig(hs256_secret_file=secret_file)), token, 401, "invalid_token")


async def test_tampered_payload(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file))
    h, _p, s = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    evil = b64(json.dumps(claims(sub="bob")).encode())
    await expect(a, f"{h}.{evil}.{s}", 401, "invalid_token")


# -- asymmetric keys, kid, rotation -------------------------------------------------------


async def test_kid_rotation_rs256_and_es256(
    key_files: dict[str, str], rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    a = make_auth(AuthConfig(algorithms=["RS256", "ES256"], public_key_files=key_files))
    t_old = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "old"})
    t_new = jwt.encode(claims(sub="bob"), ec_key, algorithm="ES256", headers={"kid": "new"})
    assert (await a.authenticate(t_old)).user == "alice"
    assert (await a.authenticate(t_new)).user == "bob"


async def test_unknown_kid(key_files: dict[str, str], rsa_key: rsa.RSAPrivateKey) -> None:
    a = make_auth(AuthConfig(algorithms=["RS256", "ES256"], public_key_files=key_files))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "retired"})
    await expect(a, token, 401, "invalid_token")


async def test_kid_of_other_key_type(
    key_files: dict[str, str], ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    a = make_auth(AuthConfig(algorithms=["RS256", "ES256"], public_key_files=key_files))
    # ES256 token pointing at the RSA key's kid, and the reverse.
    await expect(
        a,
        jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "old"}),
        401,
        "invalid_token",
    )
    await expect(
        a,
        jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "new"}),
        401,
        "invalid_token",
    )


async def test_signed_by_unconfigured_key(
    key_files: dict[str, str], rsa_key2: rsa.RSAPrivateKey
) -> None:
    a = make_auth(AuthConfig(algorithms=["RS256"], public_key_files=key_files))
    token = jwt.encode(claims(), rsa_key2, algorithm="RS256", headers={"kid": "old"})
    await expect(a, token, 401, "invalid_token")


async def test_no_kid_only_with_a_single_key(
    tmp_path: Path,
    key_files: dict[str, str],
    rsa_key: rsa.RSAPrivateKey,
    rsa_key2: rsa.RSAPrivateKey,
) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    one = make_auth(AuthConfig(algorithms=["RS256", "ES256"], public_key_files=key_files))
    assert (await one.authenticate(token)).user == "alice"  # one RSA key (+ one EC key)
    second = tmp_path / "second.pem"
    second.write_bytes(pem_public(rsa_key2))
    two = make_auth(
        AuthConfig(algorithms=["RS256"], public_key_files={**key_files, "second": str(second)})
    )
    await expect(two, token, 401, "invalid_token")


async def test_jwks_file(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    doc = {
        "keys": [
            {**rsa_jwk, "kid": "k-2024", "use": "sig", "alg": "RS256"},
            {**ec_jwk, "kid": "k-2025", "use": "sig"},
            {"kty": "oct", "k": b64(b"published-secret"), "kid": "sym"},  # must be ignored
            {**rsa_jwk, "kid": "enc-key", "use": "enc"},  # must be ignored
        ]
    }
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps(doc))
    a = make_auth(AuthConfig(algorithms=["HS256", "RS256", "ES256"], jwks_file=str(p)))
    ok1 = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k-2024"})
    ok2 = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "k-2025"})
    assert (await a.authenticate(ok1)).user == "alice"
    assert (await a.authenticate(ok2)).user == "alice"
    # The oct key in the public JWKS never becomes an HMAC secret.
    sym = jwt.encode(claims(), b"published-secret", algorithm="HS256", headers={"kid": "sym"})
    await expect(a, sym, 401, "invalid_token")
    enc = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "enc-key"})
    await expect(a, enc, 401, "invalid_token")


def test_jwks_with_private_key_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    priv = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key))
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [{**priv, "kid": "x"}]}))
    with pytest.raises(ConfigError, match="private"):
        make_auth(AuthConfig(algorithms=["RS256"], jwks_file=str(p)))


def test_bad_key_files_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "weak.pem").write_bytes(pem_public(weak))
    with pytest.raises(ConfigError, match="2048"):
        make_auth(
            AuthConfig(algorithms=["RS256"], public_key_files={"w": str(tmp_path / "weak.pem")})
        )
    priv = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "priv.pem").write_bytes(priv)
    with pytest.raises(ConfigError, match="private key"):
        make_auth(
            AuthConfig(algorithms=["RS256"], public_key_files={"p": str(tmp_path / "priv.pem")})
        )
    with pytest.raises(ConfigError, match="cannot read"):
        make_auth(
            AuthConfig(algorithms=["RS256"], public_key_files={"m": str(tmp_path / "missing.pem")})
        )


async def test_keys_loaded_once_and_reloaded(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(pem_public(rsa_key))
    a = make_auth(AuthConfig(algorithms=["RS256"], public_key_files={"k": str(path)}))
    t1 = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k"})
    t2 = jwt.encode(claims(), rsa_key2, algorithm="RS256", headers={"kid": "k"})
    path.write_bytes(pem_public(rsa_key2))  # rotated on disk, not yet reloaded
    assert (await a.authenticate(t1)).user == "alice"
    await expect(a, t2, 401, "invalid_token")
    a.reload()
    assert (await a.authenticate(t2)).user == "alice"
    await expect(a, t1, 401, "invalid_token")
    path.write_text("garbage")
    with pytest.raises(ConfigError):
        a.reload()
    assert (await a.authenticate(t2)).user == "alice"  # old keys kept on a failed reload


# -- username and groups claims -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "separator", "expected"),
    [
        (["a", "b"], "", ("a", "b")),
        (["a", "b"], ", ", ("a", "b")),
        ("a,b", ",", ("a", "b")),
        ("a b", " ", ("a", "b")),
        (" a, b  c ,", ", ", ("a", "b", "c")),
        ("a\tb", " ", ("a", "b")),  # a space in the separator: any whitespace
        ("a b,c", ",", ("a b", "c")),
        ([], "", ()),
        ("", "", ()),
        ("", ",", ()),
        (None, "", ()),
        (["a", 3, "a", "b"], "", ("a", "b")),
        # Not configured: a string claim is ONE group, never split.
        ("Research Staff", "", ("Research Staff",)),
        ("staff vizdesk-admins", "", ("staff vizdesk-admins",)),
        (" a,b ", "", ("a,b",)),
        (["Research Staff"], " ", ("Research Staff",)),  # lists are never split
    ],
)
def test_parse_groups(value: object, separator: str, expected: tuple[str, ...]) -> None:
    assert parse_groups(value, separator) == expected


async def test_groups_claim_shapes(secret_file: str) -> None:
    cfg = AuthConfig(
        hs256_secret_file=secret_file,
        groups_claim="roles",
        groups_claim_separator=" ",
        admin_groups=["vizdesk-admins"],
    )
    a = make_auth(cfg)
    t = jwt.encode(claims(roles="staff vizdesk-admins"), SECRET, algorithm="HS256")
    ident = await a.authenticate(t)
    assert ident.groups == ("staff", "vizdesk-admins") and ident.is_admin
    t = jwt.encode(claims(roles=["staff"], groups=["vizdesk-admins"]), SECRET, algorithm="HS256")
    ident = await a.authenticate(t)
    assert ident.groups == ("staff",) and not ident.is_admin  # "groups" is not the claim
    t = jwt.encode(claims(roles={"a": 1}), SECRET, algorithm="HS256")
    await expect(a, t, 401, "invalid_token")


async def test_string_groups_claim_is_one_group_by_default(secret_file: str) -> None:
    """Without auth.groups_claim_separator a string claim is one group: a group named
    "x vizdesk-admins" does not make its members admins."""
    a = make_auth(AuthConfig(hs256_secret_file=secret_file, admin_groups=["vizdesk-admins"]))
    t = jwt.encode(claims(groups="Research Staff"), SECRET, algorithm="HS256")
    assert (await a.authenticate(t)).groups == ("Research Staff",)
    t = jwt.encode(claims(groups="staff vizdesk-admins"), SECRET, algorithm="HS256")
    ident = await a.authenticate(t)
    assert ident.groups == ("staff vizdesk-admins",) and not ident.is_admin
    t = jwt.encode(claims(groups="vizdesk-admins"), SECRET, algorithm="HS256")
    assert (await a.authenticate(t)).is_admin  # the exact name still is one


async def test_deeply_nested_token_header_is_401(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file))
    header = base64.urlsafe_b64encode(b"[" * 9000).rstrip(b"=").decode()
    await expect(a, header + ".e30.c2ln", 401, "invalid_token")


async def test_username_claim(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file, username_claim="preferred_username"))
    t = jwt.encode(claims(preferred_username="carol"), SECRET, algorithm="HS256")
    assert (await a.authenticate(t)).user == "carol"
    await expect(a, jwt.encode(claims(), SECRET, algorithm="HS256"), 401, "invalid_token")
    t = jwt.encode(claims(preferred_username=42), SECRET, algorithm="HS256")
    await expect(a, t, 401, "invalid_token")


# -- revocation (the Redis deny-list, here in memory) -------------------------------------


async def test_revoked_jti(secret_file: str) -> None:
    redis = FakeRedis()
    a = make_auth(AuthConfig(hs256_secret_file=secret_file), redis)
    token = jwt.encode(claims(jti="abc"), SECRET, algorithm="HS256")
    assert (await a.authenticate(token)).jti == "abc"
    await a.revoke_jti("abc", int(time.time()) + 600)
    assert "t:revoked:abc" in redis.data
    await expect(a, token, 401, "token_revoked")
    other = jwt.encode(claims(jti="def"), SECRET, algorithm="HS256")
    assert (await a.authenticate(other)).jti == "def"


async def test_require_jti(secret_file: str) -> None:
    a = make_auth(AuthConfig(hs256_secret_file=secret_file, require_jti=True))
    await expect(a, jwt.encode(claims(), SECRET, algorithm="HS256"), 401, "invalid_token")
    await expect(a, jwt.encode(claims(jti=""), SECRET, algorithm="HS256"), 401, "invalid_token")
    await expect(a, jwt.encode(claims(jti=5), SECRET, algorithm="HS256"), 401, "invalid_token")


# -- real POSIX accounts behind the token -------------------------------------------------


def real_auth(secret_file: str, **kw: Any) -> JwtAuthenticator:
    return JwtAuthenticator(
        AuthConfig(hs256_secret_file=secret_file, **kw),
        FakeRedis(),  # type: ignore[arg-type]
        Keys("t:"),
    )


@pytest.mark.parametrize("user", ["root", "slurm", "nobody", "no-such-user-vz", "Root;id"])
async def test_account_denied(secret_file: str, user: str) -> None:
    a = real_auth(secret_file)
    await expect(a, jwt.encode(claims(sub=user), SECRET, algorithm="HS256"), 403, "account_denied")


async def test_root_denied_even_with_min_uid_zero(secret_file: str) -> None:
    a = real_auth(secret_file, min_uid=0, denied_users=[])
    await expect(
        a, jwt.encode(claims(sub="root"), SECRET, algorithm="HS256"), 403, "account_denied"
    )


async def test_real_account_allowed(secret_file: str) -> None:
    import pwd

    try:
        pw = pwd.getpwnam("alice")
    except KeyError:
        pytest.skip("no local account alice (the test bed creates it)")
    ident = await real_auth(secret_file).authenticate(
        jwt.encode(claims(sub="alice"), SECRET, algorithm="HS256")
    )
    assert (ident.user, ident.uid, ident.gid) == ("alice", pw.pw_uid, pw.pw_gid)


# -- dev tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"issuer": "https://sso.example"},
        {"audience": "vizdesk"},
        {"username_claim": "uid", "groups_claim": "roles"},
    ],
)
async def test_minted_token_is_accepted(secret_file: str, extra: dict[str, Any]) -> None:
    cfg = AuthConfig(hs256_secret_file=secret_file, admin_groups=["adm"], **extra)
    token = mint_token(cfg, "alice", ["adm", "staff"], 300)
    ident = await make_auth(cfg).authenticate(token)
    assert ident.user == "alice" and ident.groups == ("adm", "staff") and ident.is_admin
    assert ident.jti and ident.exp and 290 <= ident.exp - time.time() <= 300
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["iss"] == (cfg.issuer or cfg.dev_token_issuer)
    assert mint_token(cfg, "alice", [], 60) != mint_token(cfg, "alice", [], 60)  # random jti
    assert (
        jwt.decode(mint_token(cfg, "a", [], 60, jti="fixed"), options={"verify_signature": False})[
            "jti"
        ]
        == "fixed"
    )


def test_mint_token_errors(secret_file: str) -> None:
    with pytest.raises(ConfigError):
        mint_token(AuthConfig(), "alice", [], 60)
    with pytest.raises(ConfigError):
        mint_token(AuthConfig(algorithms=["RS256"], hs256_secret_file=secret_file), "a", [], 60)
    with pytest.raises(ValueError):
        mint_token(AuthConfig(hs256_secret_file=secret_file), "alice", [], 0)
    with pytest.raises(ValueError):
        mint_token(
            AuthConfig(hs256_secret_file=secret_file, max_token_lifetime_seconds=60),
            "alice",
            [],
            61,
        )
