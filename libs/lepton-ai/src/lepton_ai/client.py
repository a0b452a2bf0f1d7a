"""``la.Client``: the entry point of the SDK."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from types import TracebackType

from lepton_ai import access
from lepton_ai._transport import ClientCertificate, RootCertificates, Transport
from lepton_ai.access import AuditTrail, Keys, Plans, Principal, Tenants, Usage
from lepton_ai.datasets import Datasets
from lepton_ai.deployments import Deployments
from lepton_ai.events import Events
from lepton_ai.jobs import Jobs
from lepton_ai.monitor import Monitor
from lepton_ai.registry import Models


class Client:
    """A connection to a Lepton platform.

    Args:
        api_key: Your API key; defaults to ``LEPTON_API_KEY``.
        url: The platform's address, ``host:port`` of its data service with the other
            services on the next five ports (what ``make up`` prints), or
            ``grpcs://host:port`` for TLS. Defaults to ``LEPTON_URL``, else the local
            embedded platform at ``127.0.0.1:50051``.
        endpoints: Per-service addresses that override ``url`` (``{"trainer": "h:p"}``).
        root_certificates: The CA the platform's certificate must chain to, as a PEM
            file's path or PEM bytes; defaults to ``LEPTON_TLS_CA_FILE``, else the
            system's roots. Giving one means TLS even at a ``host:port`` url.
        client_certificate: (certificate chain, private key) PEM files to present to a platform
            that requires mutual TLS (``tls_require_client_cert``); defaults to
            ``LEPTON_TLS_CERT_FILE`` and ``LEPTON_TLS_KEY_FILE``.
        insecure: Allow plaintext to an address beyond this machine (a network you trust);
            defaults to ``LEPTON_INSECURE``. Without it such a client raises
            :class:`~lepton_ai.errors.InvalidArgument`, since the API key would cross the
            network unencrypted; loopback addresses are always allowed.

    A TLS handshake that fails, or a plaintext client at a TLS platform (and the
    reverse), raises :class:`~lepton_ai.errors.Unavailable` naming the address and
    what to check.

    Example:
        >>> import lepton_ai as la
        >>> client = la.Client("your_api_key")
        >>> dataset = client.datasets.upload("sales.csv")
    """

    def __init__(
        self,
        api_key: str | None = None,
        url: str | None = None,
        *,
        endpoints: Mapping[str, str] | None = None,
        root_certificates: RootCertificates | None = None,
        insecure: bool | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        self._transport = Transport(api_key, url, endpoints, root_certificates, insecure, client_certificate)
        self.datasets = Datasets(self._transport)
        self.jobs = Jobs(self._transport)
        self.models = Models(self._transport)
        self.deployments = Deployments(self._transport)
        self.monitor = Monitor(self._transport)
        self.events = Events(self._transport)
        self.keys = Keys(self._transport)
        self.plans = Plans(self._transport)
        self.tenants = Tenants(self._transport)

    @property
    def endpoints(self) -> dict[str, str]:
        """The address of each service this client talks to."""
        return dict(self._transport.endpoints)

    def whoami(self) -> Principal:
        """The caller as the platform sees it: the key's tenant, id, name, role, permissions,
        grants and expiry.

        Example:
            >>> me = client.whoami()
            >>> me.tenant, me.role, "keys.manage" in me.permissions
        """
        return access.whoami(self._transport)

    def audit(
        self,
        since: datetime | timedelta | None = None,
        *,
        principal: str | None = None,
        resource: str | None = None,
        limit: int = 1000,
        tenant: str | None = None,
    ) -> AuditTrail:
        """The audit trail: every mutating call and every refusal in your tenant, oldest first.

        Needs the permission ``audit.read``.

        Args:
            since: Records at or after this time; a ``timedelta`` counts back from now, a naive
                ``datetime`` is local time. None: the last 24 hours.
            principal: Only this caller's: ``"key:<id>"``, or a key id alone.
            resource: Only records about this resource (``"model/churn"``), or about every
                resource under a prefix ending in ``/`` (``"dataset/"``).
            limit: At most this many records (the platform gives at most 1000).
            tenant: Another tenant's trail (role operator only); None: yours.

        Returns:
            An :class:`~lepton_ai.AuditTrail` of :class:`~lepton_ai.AuditRecord`, a sequence
            whose ``truncated`` says whether more records matched than ``limit``.

        Example:
            >>> trail = client.audit(since=timedelta(hours=1), resource="model/")
            >>> [(r.time, r.principal, r.method_name, r.outcome) for r in trail]
        """
        return access.audit(self._transport, since, principal=principal, resource=resource, limit=limit, tenant=tenant)

    def usage(self, tenant: str | None = None) -> Usage:
        """Your tenant's plan and what it uses of each limit, metered from the platform's events.

        Needs the permission ``usage.read`` (roles admin and operator). Past a limit, the call
        that would pass it raises :class:`~lepton_ai.errors.ResourceExhausted` naming the limit,
        the usage and the plan, and stores nothing.

        Args:
            tenant: Another tenant's usage (role operator only); None: yours.

        Returns:
            A :class:`~lepton_ai.Usage`: the plan, and a :class:`~lepton_ai.LimitUsage` per limit
            (``usage["stored_bytes"].used``).

        Example:
            >>> usage = client.usage()
            >>> usage.plan, usage["datasets"].used, usage["datasets"].maximum
        """
        return access.usage(self._transport, tenant)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
