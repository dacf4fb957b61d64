"""Pure: the Hasura source's configuration (pool, read replicas, connection set and template) and routing cases.

The program builds a `SourceSettings` from the stack config and hands it to the bootstrap Job as JSON
(`HASURA_SOURCE_SETTINGS`); the bootstrap turns it into one `pg_add_source` (replace_configuration)
when the exported source differs, then asks Hasura to route every case with `pg_test_connection_template`.
Database URLs never appear here: every connection names the environment variable Hasura reads it from
(rendered into Hasura's pod by the Vault agent).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from app.hasura.connection_template import RequestContext, Route, TemplateError

PRIMARY_URL_ENV = "HASURA_GRAPHQL_DATABASE_URL"
ISOLATION_LEVELS = ("read-committed", "repeatable-read", "serializable")
# the roles of the flow; with a template, none of their mutations may be routed to a read replica
FLOW_ROLES = ("user", "service")
ENTERPRISE_KEYS = ("read_replicas", "connection_template", "connection_set")


def replica_url_env(index: int) -> str:
    """Env var of the n-th read replica URL (1-based) in Hasura's pod."""
    return f"HASURA_READ_REPLICA_{index}_URL"


def connection_set_url_env(member: str) -> str:
    return f"HASURA_CONNECTION_SET_{member.upper()}_URL"


@dataclass(frozen=True)
class PoolSettings:
    """Per-connection pool of each Hasura instance (Hasura's pool_settings; times in seconds).

    `pool_timeout` None: wait for a connection as long as it takes (Hasura has no default for it);
    `connection_lifetime` 0: never recycle a connection (Hasura stores that as "no lifetime")."""

    max_connections: int = 20
    idle_timeout: int = 60
    pool_timeout: int | None = 10
    connection_lifetime: int = 600
    retries: int = 1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "pool_timeout" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "max_connections" else 0):
                raise ValueError(f"pool {name} must be a {'positive' if name == 'max_connections' else 'whole'} "
                                 f"number, not {value!r}")

    def as_metadata(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class RoutingCase:
    """A request shape and where it must go; `forbid` instead of `expect` for the built-in mutation probes."""

    name: str
    request: RequestContext
    expect: Route | None = None
    forbid: Route | None = None

    def verdict(self, got: Route) -> str | None:
        """None when `got` is right, else what is wrong with it."""
        if self.expect is not None and got != self.expect:
            return f"routes to {got}, expected {self.expect}"
        if self.forbid is not None and got == self.forbid:
            return f"routes to {got}, which is never allowed for this request"
        return None


def mutation_probes() -> list[RoutingCase]:
    """A mutation of each flow role never goes to a read replica (Hasura fails such a request)."""
    return [RoutingCase(name=f"{role}-mutation-never-on-replica",
                        request=RequestContext(headers={}, session={"x-hasura-role": role},
                                               operation_type="mutation", operation_name="publish_async_request"),
                        forbid=Route("read_replicas"))
            for role in FLOW_ROLES]


@dataclass(frozen=True)
class SourceSettings:
    edition: str = "ce"
    pool: PoolSettings = field(default_factory=PoolSettings)
    isolation_level: str = "read-committed"
    read_replica_envs: tuple[str, ...] = ()
    connection_set: tuple[tuple[str, str], ...] = ()  # (member, env var), sorted by member
    template: str | None = None
    cases: tuple[RoutingCase, ...] = ()

    def __post_init__(self) -> None:
        if self.edition not in ("ce", "ee"):
            raise ValueError(f"edition {self.edition!r} is not ce or ee")
        if self.isolation_level not in ISOLATION_LEVELS:
            raise ValueError(f"isolation level {self.isolation_level!r} is not one of {', '.join(ISOLATION_LEVELS)}")
        if self.edition == "ce" and (self.read_replica_envs or self.connection_set or self.template):
            raise ValueError("read replicas, connection sets and connection templates need Hasura Enterprise (ee)")
        if self.cases and self.template is None:
            raise ValueError("routing cases need a connection template")
        for case in self.cases:  # the bootstrap sends each to pg_test_connection_template
            problems = case.request.problems()
            if problems:
                raise ValueError(f"case {case.name!r}: " + "; ".join(problems))

    @property
    def enterprise(self) -> bool:
        """Uses what only Hasura Enterprise acts on (CE stores it and ignores it)."""
        return bool(self.read_replica_envs or self.connection_set or self.template)

    # ------------------------------------------------------------ metadata
    def _connection(self, env: str) -> dict[str, Any]:
        return {"database_url": {"from_env": env}, "isolation_level": self.isolation_level,
                "pool_settings": self.pool.as_metadata(), "use_prepared_statements": False}

    def configuration(self, exported: dict[str, Any] | None = None) -> dict[str, Any]:
        """Hasura's PGConfiguration. From an `exported` one it keeps what this program does not own: the primary's
        database_url, its other connection settings (e.g. ssl_configuration) and other top-level keys."""
        exported = exported or {}
        primary = exported.get("connection_info") or {}
        connection = {**primary, **self._connection(PRIMARY_URL_ENV)}
        if primary.get("database_url") is not None:
            connection["database_url"] = primary["database_url"]
        config: dict[str, Any] = {k: v for k, v in exported.items() if k not in ("connection_info", *ENTERPRISE_KEYS)}
        config["connection_info"] = connection
        if self.read_replica_envs:
            config["read_replicas"] = [self._connection(env) for env in self.read_replica_envs]
        if self.connection_set:
            config["connection_set"] = [{"name": member, "connection_info": self._connection(env)}
                                        for member, env in self.connection_set]
        if self.template is not None:
            config["connection_template"] = {"version": TEMPLATE_VERSION, "template": self.template}
        return config

    def routing_cases(self) -> list[RoutingCase]:
        """What the bootstrap asks Hasura to route: the stack's cases, then the mutation probes."""
        return [*self.cases, *mutation_probes()] if self.template is not None else []

    # ------------------------------------------------------------ wire format (the Job's env)
    def to_json(self) -> str:
        def case(c: RoutingCase) -> dict[str, Any]:
            return {"name": c.name, "request": c.request.as_json(),
                    **({"expect": str(c.expect)} if c.expect else {}),
                    **({"forbid": str(c.forbid)} if c.forbid else {})}

        return json.dumps({
            "edition": self.edition, "pool": asdict(self.pool),  # None kept: "wait forever"
            "isolation_level": self.isolation_level,
            "read_replica_envs": list(self.read_replica_envs),
            "connection_set": {member: env for member, env in self.connection_set},
            "template": self.template, "cases": [case(c) for c in self.cases],
        }, sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SourceSettings:
        """Parse the Job's HASURA_SOURCE_SETTINGS; ValueError names what is wrong."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SourceSettings:
        try:
            cases = []
            for c in raw.get("cases", []):
                query = c["request"].get("query", {})
                cases.append(RoutingCase(
                    name=str(c["name"]),
                    request=RequestContext(headers=dict(c["request"].get("headers", {})),
                                           session=dict(c["request"].get("session", {})),
                                           operation_type=str(query["operation_type"]),
                                           operation_name=query.get("operation_name")),
                    expect=Route.parse(c["expect"]) if "expect" in c else None,
                    forbid=Route.parse(c["forbid"]) if "forbid" in c else None))
            return cls(edition=raw.get("edition", "ce"), pool=PoolSettings(**raw.get("pool", {})),
                       isolation_level=raw.get("isolation_level", "read-committed"),
                       read_replica_envs=tuple(raw.get("read_replica_envs", ())),
                       connection_set=tuple(sorted(raw.get("connection_set", {}).items())),
                       template=raw.get("template"), cases=tuple(cases))
        except (KeyError, TypeError, AttributeError, TemplateError) as exc:
            raise ValueError(f"not a source settings document: {exc!r}") from None


# ---------------------------------------------------------------- comparing with an export
# What Hasura exports for a configuration it was sent (graphql-engine Backends/Postgres/Connection/Settings.hs):
# `PostgresSourceConnInfo` always carries use_prepared_statements (default false) and isolation_level (default
# read-committed); `PostgresPoolSettings` keeps only the keys given, except connection_lifetime, which goes
# through `parseConnLifeTime` (Hasura/Server/Utils.hs): absent -> 600, 0 -> none (so omitted on export);
# `ConnectionTemplate` is exported with its version (default 1); extensions_schema "public" is omitted.
CONNECTION_DEFAULTS = {"isolation_level": "read-committed", "use_prepared_statements": False}
DEFAULT_LIFETIME = 600
TEMPLATE_VERSION = 1


def _stored_connection(info: dict[str, Any]) -> dict[str, Any]:
    """The connection Hasura stores (and exports) for a connection_info it was sent."""
    out = {**CONNECTION_DEFAULTS, **{k: v for k, v in info.items() if v is not None}}
    pool = info.get("pool_settings")
    if pool is not None:
        pool = {k: v for k, v in pool.items() if v is not None}
        lifetime = pool.pop("connection_lifetime", DEFAULT_LIFETIME)
        if lifetime != 0:
            pool["connection_lifetime"] = lifetime
        out["pool_settings"] = pool
    return out


def _exported_connection(info: dict[str, Any]) -> dict[str, Any]:
    """An exported connection, with the defaults an older export may leave out filled in (pools as they are)."""
    return {**CONNECTION_DEFAULTS, **{k: v for k, v in info.items() if v is not None}}


def _configuration(config: dict[str, Any], connection) -> dict[str, Any]:  # noqa: ANN001 - one of the two above
    out: dict[str, Any] = {k: v for k, v in config.items()
                           if k not in ("connection_info", "extensions_schema", *ENTERPRISE_KEYS)}
    if config.get("extensions_schema") not in (None, "public"):
        out["extensions_schema"] = config["extensions_schema"]
    out["connection_info"] = connection(config.get("connection_info") or {})
    if config.get("read_replicas"):
        out["read_replicas"] = [connection(r) for r in config["read_replicas"]]
    if config.get("connection_set"):  # a hash map in Hasura: its export order means nothing
        out["connection_set"] = sorted(({"name": m.get("name"), "connection_info": connection(
            m.get("connection_info") or {})} for m in config["connection_set"]), key=lambda m: str(m["name"]))
    template = config.get("connection_template")
    if template is not None:
        out["connection_template"] = {"version": template.get("version", TEMPLATE_VERSION),
                                      "template": template.get("template")}
    return out


def stored(config: dict[str, Any]) -> dict[str, Any]:
    """What Hasura's export shows after a `pg_add_source` with this configuration."""
    return _configuration(config, _stored_connection)


def as_exported(config: dict[str, Any]) -> dict[str, Any]:
    """An exported configuration, comparable with `stored(...)`."""
    return _configuration(config, _exported_connection)


def plan_source_command(source: dict[str, Any], desired: SourceSettings) -> dict[str, Any] | None:
    """One `pg_add_source` (replace_configuration) when the exported `source` differs from `desired`, else None.

    replace_configuration also replaces the source's customization with the request's (empty when absent:
    `runAddSource`, RQL/DDL/Schema/Source.hs), so the exported one is sent back unchanged."""
    exported = source.get("configuration") or {}
    want = desired.configuration(exported)
    if as_exported(exported) == stored(want):
        return None
    args: dict[str, Any] = {"name": source["name"], "configuration": want, "replace_configuration": True}
    if source.get("customization"):
        args["customization"] = source["customization"]
    return {"type": "pg_add_source", "args": args}
