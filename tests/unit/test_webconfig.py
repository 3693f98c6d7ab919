"""webconfig.py: exporter-toolkit's web config format, its defaults and its errors (each
at its key path), and the basic-auth check's cache."""

from __future__ import annotations

import base64

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.core.errors import ConfigErrors
from monitor.shell import http
from monitor.shell.webconfig import TLSServerConfig, WebConfig, build_web_config

PATH = "/etc/drift-monitor/web.yml"
HASH = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG"


def problems(raw: object) -> dict[str, str]:
    with pytest.raises(ConfigErrors) as caught:
        build_web_config(raw, PATH)
    return {e.path: str(e) for e in caught.value.errors}


def test_an_empty_file_means_plain_http_without_auth():
    for raw in (None, {}, {"tls_server_config": {}, "basic_auth_users": {}}):
        assert build_web_config(raw, PATH) == WebConfig(PATH)


def test_tls_defaults_are_exporter_toolkits_and_paths_are_relative_to_the_file():
    web = build_web_config({"tls_server_config": {"cert_file": "tls/s.crt",
                                                  "key_file": "/keys/s.key"}}, PATH)
    assert web.tls == TLSServerConfig(cert_file="/etc/drift-monitor/tls/s.crt",
                                      key_file="/keys/s.key", client_auth_type="NoClientCert",
                                      min_version="TLS12", max_version="TLS13",
                                      prefer_server_cipher_suites=True)
    assert web.files() == (PATH, "/etc/drift-monitor/tls/s.crt", "/keys/s.key")


def test_client_certificates_need_a_ca_exactly_when_they_are_verified():
    base = {"cert_file": "s.crt", "key_file": "s.key"}
    for auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        assert "tls_server_config.client_ca_file" in problems(
            {"tls_server_config": {**base, "client_auth_type": auth}})
        web = build_web_config({"tls_server_config": {**base, "client_auth_type": auth,
                                                      "client_ca_file": "ca.crt"}}, PATH)
        assert web.tls is not None and web.tls.client_ca_file == "/etc/drift-monitor/ca.crt"
    assert build_web_config({"tls_server_config": {**base, "client_auth_type":
                                                   "RequireAnyClientCert"}}, PATH).tls
    assert "tls_server_config.client_ca_file" in problems(
        {"tls_server_config": {**base, "client_ca_file": "ca.crt"}})


def test_every_problem_is_reported_at_its_key_path():
    found = problems({
        "tls_server_config": {"client_auth_type": "Maybe", "min_version": "TLS13",
                              "max_version": "TLS12", "cipher_suites": ["TLS_FAST", 3],
                              "colour": 1},
        "basic_auth_users": {"alice": "plain", "bob": HASH, "": HASH},
        "http_server_config": {"headers": {"X-Frame-Options": "allow", "X-Powered-By": "me"}},
        "rate_limit": {"interval": "1s", "burst": 3},
        "colour": "blue",
    })
    assert set(found) == {
        "tls_server_config.cert_file", "tls_server_config.key_file",
        "tls_server_config.client_auth_type", "tls_server_config.max_version",
        "tls_server_config.cipher_suites[0]", "tls_server_config.cipher_suites[1]",
        "tls_server_config.colour", "basic_auth_users.alice", "basic_auth_users.",
        "http_server_config.headers.X-Frame-Options", "http_server_config.headers.X-Powered-By",
        "rate_limit", "colour"}
    assert "unknown key" in found["colour"]


def test_keys_of_the_format_that_cannot_be_honoured_are_errors_not_ignored():
    found = problems({"tls_server_config": {"cert": "PEM", "key": "PEM", "client_ca": "PEM",
                                            "client_allowed_sans": ["a"]},
                      "http_server_config": {"http2": True}})
    assert set(found) == {"tls_server_config.cert", "tls_server_config.key",
                          "tls_server_config.client_ca", "tls_server_config.client_allowed_sans",
                          "http_server_config.http2"}
    assert all("not supported" in message for message in found.values())


def test_cipher_suites_and_one_curve_map_to_openssl_names():
    web = build_web_config({"tls_server_config": {
        "cert_file": "s.crt", "key_file": "s.key",
        "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"],
        "curve_preferences": ["CurveP384"], "prefer_server_cipher_suites": False}}, PATH)
    assert web.tls is not None
    assert web.tls.cipher_suites == ("ECDHE-ECDSA-AES128-GCM-SHA256",)
    assert web.tls.curve == "secp384r1" and not web.tls.prefer_server_cipher_suites
    for curves in (["X25519"], ["CurveP256", "CurveP384"]):
        assert "one curve" in problems({"tls_server_config": {
            "cert_file": "s.crt", "key_file": "s.key",
            "curve_preferences": curves}})["tls_server_config.curve_preferences"]


def test_headers_are_kept_and_blank_ones_unset():
    web = build_web_config({"http_server_config": {"headers": {
        "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "",
        "Strict-Transport-Security": "max-age=31536000"}}}, PATH)
    assert web.headers == (("X-Content-Type-Options", "nosniff"),
                           ("Strict-Transport-Security", "max-age=31536000"))
    assert "http_server_config.headers.Strict-Transport-Security" in problems(
        {"http_server_config": {"headers": {"Strict-Transport-Security": "a\r\nSet-Cookie: x"}}})


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["tls_server_config", "cert_file", "key_file", "client_auth_type",
                         "client_ca_file", "min_version", "cipher_suites", "basic_auth_users",
                         "http_server_config", "headers", "X-Frame-Options", "x"]) | st.text(max_size=8),
        inner, max_size=4),
    max_leaves=20)


@given(yaml_values)
def test_any_document_gives_a_web_config_or_config_errors(raw):
    try:
        assert isinstance(build_web_config(raw, PATH), WebConfig)
    except ConfigErrors as exc:
        assert exc.errors and all(e.path or e.args for e in exc.errors)


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_checks_each_password_once_then_answers_from_its_cache(monkeypatch):
    users = (("alice", bcrypt.hashpw(b"pw", bcrypt.gensalt(4))),)
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(http.bcrypt, "checkpw", lambda p, h: calls.append(p) or real(p, h))
    auth = http.Authenticator()
    for _ in range(20):
        assert auth.allows(users, header("alice", "pw"))
        assert not auth.allows(users, header("alice", "nope"))
        assert not auth.allows(users, header("mallory", "pw"))  # checked, against a fake hash
    assert sorted(calls) == [b"nope", b"pw", b"pw"]
    for bad in (None, "Bearer x", "Basic !!!", header("alice", "p" * 100), "Basic " +
                base64.b64encode(b"alice").decode()):
        assert not auth.allows(users, bad)
    assert len(auth.cache) <= http.AUTH_CACHE_SIZE
