"""Every Kafka client driftline opens, built from :class:`Settings` in this one place.

The connection and security keywords (bootstrap servers, TLS, SASL) come from the
settings here and nowhere else: the monitor's producer and consumers, the logger's
consumer, the admin client, the simulator's producer, and the Faust app's own clients
(through :func:`faust_credentials`). Code that needs a client asks this module for one,
so no client can be opened unsecured by forgetting a keyword (``tests/streams/
test_kafka_clients.py`` checks that nothing else in ``streams/`` constructs one).

Security protocols, as Kafka names them:

* ``PLAINTEXT`` -- no TLS, no authentication (a local broker);
* ``SSL`` -- TLS; with ``DRIFTLINE_KAFKA_SSL_CERTFILE`` (+ ``_KEYFILE``) a client
  certificate, i.e. mutual TLS, the principal being the certificate's subject;
* ``SASL_SSL`` -- TLS, and SASL (SCRAM-SHA-512 by default) with a user name and password;
* ``SASL_PLAINTEXT`` -- SASL without TLS: SCRAM only (PLAIN would send the password in
  clear, and is refused).

A setting that the chosen protocol would ignore (a SASL user on ``SSL``, a certificate
on ``PLAINTEXT``) is an error, not a silent downgrade. TLS always verifies the broker's
certificate and host name (against ``DRIFTLINE_KAFKA_SSL_CAFILE``, else the system's
trust store). No error message of this module carries a secret.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from driftline.streams.config import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_ENV = {f: f"DRIFTLINE_KAFKA_{f.upper()}" for f in (
    "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile",
    "ssl_certfile", "ssl_keyfile", "ssl_key_password")}


class KafkaConfigError(ValueError):
    """The Kafka security settings are incomplete or contradict each other."""


class KafkaAccessError(RuntimeError):
    """The broker could not be reached, refused the credentials, or denied an operation.

    Its message is one line, names the setting to look at and never holds a secret."""


def _var(name: str) -> str:
    return _ENV[name]


def security_protocol(settings: Settings) -> str:
    protocol = settings.kafka_security_protocol.strip().upper()
    if protocol not in PROTOCOLS:
        raise KafkaConfigError(
            f"{_var('security_protocol')}={settings.kafka_security_protocol!r} is not one of "
            f"{', '.join(PROTOCOLS)}")
    return protocol


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``SSL`` / ``SASL_SSL`` (None for the plaintext protocols).

    Verifies the broker's certificate chain and host name; loads the client certificate
    (mutual TLS) when one is configured."""
    protocol = security_protocol(settings)
    files = {k: getattr(settings, f"kafka_{k}") for k in ("ssl_cafile", "ssl_certfile",
                                                          "ssl_keyfile")}
    if protocol not in ("SSL", "SASL_SSL"):
        given = [_var(k) for k, v in files.items() if v] + (
            [_var("ssl_key_password")] if settings.kafka_ssl_key_password else [])
        if given:
            raise KafkaConfigError(f"{', '.join(given)} set, but {_var('security_protocol')}"
                                   f"={protocol} does not use TLS (SSL or SASL_SSL do)")
        return None
    cafile, certfile, keyfile = files["ssl_cafile"], files["ssl_certfile"], files["ssl_keyfile"]
    if keyfile and not certfile:
        raise KafkaConfigError(f"{_var('ssl_keyfile')} is set without "
                               f"{_var('ssl_certfile')} (the client certificate)")
    if settings.kafka_ssl_key_password and not certfile:
        raise KafkaConfigError(f"{_var('ssl_key_password')} is set without "
                               f"{_var('ssl_certfile')} (the client certificate)")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaConfigError(f"cannot read the CA certificates in {_var('ssl_cafile')}="
                               f"{cafile}: {_reason(exc)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        password = settings.kafka_ssl_key_password.get() or None
        try:
            ctx.load_cert_chain(certfile, keyfile or None, password=password)
        except (OSError, ssl.SSLError) as exc:
            where = f"{_var('ssl_certfile')}={certfile}" + (
                f", {_var('ssl_keyfile')}={keyfile}" if keyfile else "")
            hint = (f" (wrong {_var('ssl_key_password')}, or not a PEM certificate and key?)"
                    if isinstance(exc, ssl.SSLError) else "")
            raise KafkaConfigError(f"cannot load the client certificate and key from {where}:"
                                   f" {_reason(exc)}{hint}") from None
    return ctx


def _sasl(settings: Settings, protocol: str) -> dict[str, Any]:
    user, password = settings.kafka_sasl_username, settings.kafka_sasl_password
    if not protocol.startswith("SASL_"):
        given = [_var(k) for k, v in (("sasl_username", user), ("sasl_password", password))
                 if v]
        if given:
            raise KafkaConfigError(f"{', '.join(given)} set, but {_var('security_protocol')}"
                                   f"={protocol} does not use SASL (SASL_SSL does)")
        return {}
    mechanism = settings.kafka_sasl_mechanism.strip().upper()
    if mechanism not in MECHANISMS:
        raise KafkaConfigError(f"{_var('sasl_mechanism')}={settings.kafka_sasl_mechanism!r} "
                               f"is not one of {', '.join(MECHANISMS)}")
    if mechanism == "PLAIN" and protocol == "SASL_PLAINTEXT":
        raise KafkaConfigError(f"{_var('sasl_mechanism')}=PLAIN over SASL_PLAINTEXT would "
                               "send the password in clear: use SASL_SSL or SCRAM")
    missing = [_var(k) for k, v in (("sasl_username", user), ("sasl_password", password))
               if not v]
    if missing:
        raise KafkaConfigError(f"{_var('security_protocol')}={protocol} needs "
                               f"{' and '.join(missing)}")
    return {"sasl_mechanism": mechanism, "sasl_plain_username": user,
            "sasl_plain_password": password.get()}


def connection_kwargs(settings: Settings) -> dict[str, Any]:
    """The aiokafka keyword arguments that connect a client (producer, consumer, admin)
    as ``settings`` say: ``bootstrap_servers``, ``security_protocol``, ``ssl_context`` and
    the SASL ones. Raises :class:`KafkaConfigError` on incomplete or contradicting
    settings. The result holds the password: pass it on, never log it."""
    protocol = security_protocol(settings)
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                              "security_protocol": protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    kwargs.update(_sasl(settings, protocol))
    return kwargs


def faust_credentials(settings: Settings) -> Any:
    """The Faust app's ``broker_credentials`` for the same settings (None: PLAINTEXT)."""
    import faust

    kwargs = connection_kwargs(settings)
    protocol = kwargs["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    return faust.SASLCredentials(username=kwargs["sasl_plain_username"],
                                 password=kwargs["sasl_plain_password"],
                                 ssl_context=kwargs.get("ssl_context"),
                                 mechanism=kwargs["sasl_mechanism"])


def _merged(settings: Settings, options: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = connection_kwargs(settings)
    clash = sorted(set(options) & set(kwargs))
    if clash:  # a caller cannot override the connection and its security
        raise TypeError(f"connection settings come from Settings, not arguments: {clash}")
    return {**kwargs, **options}


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """An (unstarted) ``AIOKafkaProducer`` connected as ``settings`` say."""
    return AIOKafkaProducer(**_merged(settings, options))


def consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An (unstarted) ``AIOKafkaConsumer`` connected as ``settings`` say."""
    return AIOKafkaConsumer(*topics, **_merged(settings, options))


def admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An (unstarted) ``AIOKafkaAdminClient`` connected as ``settings`` say."""
    return AIOKafkaAdminClient(**_merged(settings, options))


async def start(client: Any, settings: Settings) -> None:
    """Start an aiokafka client; when it cannot connect, close it and raise
    :class:`KafkaAccessError` with the reason (which aiokafka only logs)."""
    from aiokafka.errors import KafkaConnectionError

    try:
        await client.start()
    except KafkaConnectionError:
        await _close(client)
        raise KafkaAccessError(await diagnose(settings)) from None
    except BaseException:
        await _close(client)
        raise


def explain(exc: BaseException) -> str | None:
    """A one-line message for a Kafka configuration, connection or authorization failure
    (for a command to print instead of a traceback); None for anything else."""
    from aiokafka import errors

    if isinstance(exc, KafkaConfigError | KafkaAccessError):
        return str(exc)
    denied = (errors.TopicAuthorizationFailedError, errors.GroupAuthorizationFailedError,
              errors.ClusterAuthorizationFailedError,
              errors.TransactionalIdAuthorizationFailed)
    if isinstance(exc, denied):
        what = str(exc.args[0]) if exc.args else ""
        return (f"not authorized by the broker: {exc.message}"
                + (f" ({what})" if what else "")
                + " -- the principal lacks an ACL for this (docs/security.md)")
    return None


async def _close(client: Any) -> None:
    stop = getattr(client, "stop", None) or client.close
    try:
        await stop()
    except Exception:  # closing a client that never connected: nothing to keep
        pass


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        out.append((host.strip("[]") or "localhost", int(port) if port.isdigit() else 9092))
    return out


def _reason(exc: BaseException) -> str:
    """A short, secret-free description of a connection failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's TLS certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def diagnose(settings: Settings, timeout_s: float = 10.0) -> str:
    """Connect to each bootstrap server as a client would (TLS, SASL, one metadata
    request) and say in one line why it fails; the reasons aiokafka only logs."""
    from aiokafka import errors
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    kwargs = connection_kwargs(settings)
    kwargs.pop("bootstrap_servers")
    protocol = kwargs["security_protocol"]
    user = kwargs.get("sasl_plain_username")
    reasons = []
    for host, port in _hosts(settings.kafka_bootstrap):
        conn = None
        try:
            conn = await asyncio.wait_for(create_conn(
                host, port, request_timeout_ms=int(timeout_s * 1000), **kwargs), timeout_s)
            await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
            return (f"cannot connect to Kafka at {settings.kafka_bootstrap} over {protocol}"
                    f" (a test connection to {host}:{port} worked: see the log)")
        except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError):
            reason = (f"authentication as {user!r} ({kwargs['sasl_mechanism']}) failed: "
                      f"check {_var('sasl_username')} and {_var('sasl_password')}")
        except errors.UnsupportedSaslMechanismError:
            reason = (f"the broker does not offer {kwargs['sasl_mechanism']} on this "
                      f"listener: check {_var('sasl_mechanism')}")
        except errors.KafkaConnectionError:
            reason = (f"the broker closed the connection: is this a {protocol} listener? "
                      f"Check {_var('security_protocol')}")
            if protocol == "SSL" and not settings.kafka_ssl_certfile:
                reason += (f" (a listener that requires client certificates needs "
                           f"{_var('ssl_certfile')})")
        except TimeoutError:
            reason = f"no answer within {timeout_s:g}s"
        except (OSError, errors.KafkaError) as exc:
            reason = _reason(exc)
        finally:
            if conn is not None:
                conn.close()
        reasons.append(f"{host}:{port}: {reason}")
    return f"cannot connect to Kafka over {protocol}: " + "; ".join(reasons)
