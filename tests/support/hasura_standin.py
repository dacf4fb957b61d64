"""A local HTTP stand-in for Hasura's metadata API (`POST /v1/metadata`).

Stands in for Hasura GraphQL Engine, which cannot run on these machines. It keeps metadata in
memory and enforces the request shapes the bootstrap uses (see shared/notes/hasura.md): admin
secret, known command types, required and unknown argument keys, tracked-table and
custom-type references, `already-tracked` / `already-exists` errors, `resource_version`
conflicts, and `bulk` that stops at the first failure without applying anything.

Sources behave as graphql-engine's source says (server/src-lib/Hasura/...; kriti-lang at c8fd863d):
- `pg_add_source` (RQL/DDL/Schema/Source.hs, `runAddSource`): `replace_configuration` replaces the
  configuration *and* the customization, with the request's or the empty one; without it an existing
  source is `already-exists`. The configuration is stored as Hasura re-exports it
  (Backends/Postgres/Connection/Settings.hs): use_prepared_statements and isolation_level always present,
  pool keys as given except connection_lifetime through `parseConnLifeTime` (absent -> 600, 0 -> omitted),
  no default pool_timeout, `connection_template` with its `version` (only 1 is supported), extensions_schema
  "public" omitted, a connection set non-empty with unique names. The template must parse as Kriti
  (`FromJSON KritiTemplate`, parsed with app/hasura/kriti, which tests/test_kriti_corpus.py holds to
  kriti-lang's own corpus) or the command fails `parse-failed`.
- Community Edition (`edition="ce"`) accepts and stores read_replicas, connection_set and connection_template
  without a word: the metadata parser is the same, only CE's source resolver ignores them
  (Hasura/App.hs, `mkPgSourceResolver`: no replica pools, `ConnTemplate_NotApplicable`). Only
  `pg_test_connection_template` says so: 400 `not-supported`.
- `pg_test_connection_template` (RQL/DDL/ConnectionTemplate.hs; Backends/Postgres/Execute/Types.hs,
  `pgResolveConnectionTemplate`): source_name defaults to "default"; a template in the request is used,
  else the source's, else 400 `template-resolution-failed`; the request context is read as Hasura reads it
  (`FromJSON RequestContext` / `QueryContext`: an operation type of query/mutation/subscription, an operation
  name that is a GraphQL name, string headers and session values: else `parse-failed`); no `x-hasura-role`
  or the admin role is 400 `invalid-params`. The answer is evaluated here, independently of
  app/hasura/connection_template.py: this module builds Hasura's context itself (`makeConnectionTemplateContext`,
  Execute/ConnectionTemplate.hs: "PRIMARY", "READ_REPLICAS", "DEFAULT", {"type": "connection_set", "name"}),
  runs the Kriti evaluator with no functions (`Kriti.runEval`), reads the result as
  `FromJSON PostgresResolvedConnectionTemplate` does and answers `{"result": {"routing_to", "value"}}`;
  a Kriti error is 400 `template-resolution-failed`. `route_overrides` makes it answer differently, the way
  a real Hasura could disagree with the offline check.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.hasura.kriti import KritiError, aeson, run_eval
from app.hasura.kriti import parse as parse_kriti

GRAPHQL_TYPE = re.compile(r"^\[?[A-Za-z_][A-Za-z0-9_]*!?\]?!?$")
ROOT_FIELDS_QUERY = {"select", "select_by_pk", "select_aggregate"}
ROOT_FIELDS_SUBSCRIPTION = ROOT_FIELDS_QUERY | {"select_stream"}
BUILTIN_SCALARS = {"String", "Int", "Float", "Boolean", "ID", "json", "jsonb", "uuid", "timestamptz"}
POOL_KEYS = {"max_connections", "total_max_connections", "idle_timeout", "retries", "pool_timeout",
             "connection_lifetime"}
ISOLATION = {"read-committed", "repeatable-read", "serializable"}
ROLE_KEY, ADMIN = "x-hasura-role", "admin"
GRAPHQL_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")
TAGS = {"PRIMARY": "primary", "READ_REPLICAS": "read_replicas", "DEFAULT": "default"}


class MetadataError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _keys(args: Any, required: set[str], optional: set[str] = frozenset(), where: str = "args") -> dict:
    if not isinstance(args, dict):
        raise MetadataError("parse-failed", f"{where} must be an object")
    missing = required - args.keys()
    unknown = args.keys() - required - optional
    if missing or unknown:
        raise MetadataError("parse-failed", f"{where}: missing {sorted(missing)}, unexpected {sorted(unknown)}")
    return args


class HasuraStandIn:
    def __init__(self, admin_secret: str, table_columns: dict[tuple[str, str], set[str]], source: str = "default",
                 edition: str = "ce"):
        self.admin_secret = admin_secret
        self.edition = edition
        self.route_overrides: dict[str, dict] = {}  # case (operation name) -> the answer to give instead
        self.table_columns = table_columns
        self.resource_version = 1
        self.metadata: dict[str, Any] = {"version": 3, "sources": [{"name": source, "kind": "postgres",
                                                                    "tables": [], "configuration": {
            "connection_info": {"database_url": {"from_env": "HASURA_GRAPHQL_DATABASE_URL"},
                                "isolation_level": "read-committed", "use_prepared_statements": False}}}]}
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    # --------------------------------------------------------------- dispatch
    def handle(self, body: Any, secret: str | None) -> tuple[int, Any]:
        if secret != self.admin_secret:
            return 401, {"code": "access-denied", "error": "invalid x-hasura-admin-secret"}
        with self._lock:
            self.calls.append(body)
            try:
                _keys(body, {"type", "args"}, {"version", "resource_version"}, "request")
                if body.get("resource_version") not in (None, self.resource_version):
                    raise MetadataError("conflict", "resource_version mismatch", 409)
                if body["type"] == "export_metadata":
                    return 200, {"resource_version": self.resource_version, "metadata": copy.deepcopy(self.metadata)}
                if body["type"] == "pg_test_connection_template":  # reads only: no new resource_version
                    return 200, self._pg_test_connection_template(self.metadata, body["args"])
                staged = copy.deepcopy(self.metadata)
                result = self._apply(staged, body["type"], body["args"])
                self.metadata = staged
                self.resource_version += 1
                return 200, result
            except MetadataError as exc:
                return exc.status, {"code": exc.code, "error": exc.message, "path": "$.args"}

    def _apply(self, md: dict, kind: str, args: Any) -> Any:
        if kind == "bulk":
            if not isinstance(args, list):
                raise MetadataError("parse-failed", "bulk args must be a list")
            results = []
            for command in args:  # stops at the first failure; the caller discards `md`
                _keys(command, {"type", "args"}, set(), "bulk item")
                results.append(self._apply(md, command["type"], command["args"]))
            return results
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise MetadataError("parse-failed", f"unknown metadata command {kind!r}")
        handler(md, args)
        return {"message": "success"}

    # --------------------------------------------------------------- helpers
    def _source(self, md: dict, name: str) -> dict:
        for source in md["sources"]:
            if source["name"] == name:
                return source
        raise MetadataError("not-exists", f"source {name!r} does not exist")

    def _table(self, md: dict, args: dict) -> dict:
        table = args["table"]
        _keys(table, {"schema", "name"}, set(), "table")
        for entry in self._source(md, args["source"])["tables"]:
            if entry["table"] == table:
                return entry
        raise MetadataError("not-exists", f"table {table} is not tracked")

    # --------------------------------------------------------------- source configuration
    def _connection_info(self, info: Any, where: str) -> dict:
        """Check a PostgresSourceConnInfo and return it as Hasura stores and exports it."""
        _keys(info, {"database_url"}, {"pool_settings", "isolation_level", "use_prepared_statements",
                                       "ssl_configuration", "extensions_schema"}, where)
        url = info["database_url"]
        if not (isinstance(url, str) or (isinstance(url, dict) and set(url) == {"from_env"})):
            raise MetadataError("parse-failed", f"{where}.database_url: a URL or {{from_env}}")
        if info.get("isolation_level", "read-committed") not in ISOLATION:
            raise MetadataError("parse-failed", f"{where}.isolation_level: one of {sorted(ISOLATION)}")
        stored = {"database_url": url, "isolation_level": info.get("isolation_level", "read-committed"),
                  "use_prepared_statements": bool(info.get("use_prepared_statements", False))}
        if info.get("pool_settings") is not None:
            pool = _keys(info["pool_settings"], set(), POOL_KEYS, f"{where}.pool_settings")
            for key, value in pool.items():
                if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                    raise MetadataError("parse-failed", f"{where}.pool_settings.{key}: a non-negative integer")
            pool = {k: v for k, v in pool.items() if v is not None}
            lifetime = pool.pop("connection_lifetime", 600)  # parseConnLifeTime: absent -> 600, 0 -> Nothing
            if lifetime != 0:
                pool["connection_lifetime"] = lifetime
            stored["pool_settings"] = pool
        if info.get("ssl_configuration") is not None:
            stored["ssl_configuration"] = copy.deepcopy(info["ssl_configuration"])
        return stored

    def _configuration(self, config: Any) -> dict:
        """`FromJSON PostgresConnConfiguration`, then its ToJSON: the same for CE and EE."""
        _keys(config, {"connection_info"}, {"read_replicas", "connection_set", "connection_template",
                                            "extensions_schema"}, "configuration")
        stored = {"connection_info": self._connection_info(config["connection_info"], "connection_info")}
        if config.get("read_replicas") is not None:
            if not isinstance(config["read_replicas"], list) or not config["read_replicas"]:
                raise MetadataError("parse-failed", "read_replicas: a non-empty list")
            stored["read_replicas"] = [self._connection_info(r, f"read_replicas[{i}]")
                                       for i, r in enumerate(config["read_replicas"])]
        if config.get("extensions_schema") not in (None, "public"):
            stored["extensions_schema"] = config["extensions_schema"]
        if config.get("connection_template") is not None:
            stored["connection_template"] = self._template(config["connection_template"])
        if config.get("connection_set") is not None:
            members = config["connection_set"]
            if not isinstance(members, list) or not members:
                raise MetadataError("parse-failed", "connection set cannot be empty")
            names = [_keys(m, {"name", "connection_info"}, set(), f"connection_set[{i}]")["name"]
                     for i, m in enumerate(members)]
            if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
                raise MetadataError("parse-failed", "connection set members with duplicate names are not allowed")
            stored["connection_set"] = [{"name": m["name"], "connection_info": self._connection_info(
                m["connection_info"], f"connection_set[{i}].connection_info")} for i, m in enumerate(members)]
        return stored

    def _template(self, template: Any) -> dict:
        """`FromJSON ConnectionTemplate`: version 1 (the default) and a template that parses as Kriti."""
        _keys(template, {"template"}, {"version"}, "connection_template")
        version = template.get("version", 1)
        if version != 1:
            raise MetadataError("parse-failed", "Supported versions are [1]")
        if not isinstance(template["template"], str):
            raise MetadataError("parse-failed", "connection_template.template: a string")
        try:
            parse_kriti(template["template"])
        except KritiError as exc:
            raise MetadataError("parse-failed", f"Kriti template parsing failed - {exc.message}") from None
        return {"version": version, "template": template["template"]}

    def _pg_add_source(self, md: dict, args: Any) -> None:
        _keys(args, {"name", "configuration"}, {"replace_configuration", "customization", "health_check"})
        config = self._configuration(args["configuration"])
        customization = copy.deepcopy(args.get("customization") or {})
        existing = next((s for s in md["sources"] if s["name"] == args["name"]), None)
        if existing is not None and not args.get("replace_configuration"):
            raise MetadataError("already-exists", f"source with name {args['name']!r} already exists")
        if existing is None:
            existing = {"name": args["name"], "kind": "postgres", "tables": []}
            md["sources"].append(existing)
        existing["configuration"] = config  # replace_configuration: configuration and customization both
        existing.pop("customization", None)
        if customization:
            existing["customization"] = customization

    def _pg_test_connection_template(self, md: dict, args: Any) -> dict:
        _keys(args, {"request_context"}, {"source_name", "connection_template"})
        source = self._source(md, args.get("source_name", "default"))
        if self.edition == "ce":
            raise MetadataError("not-supported", "Connection templating feature is enterprise edition only")
        config = source["configuration"]
        template = (self._template(args["connection_template"]) if args.get("connection_template") is not None
                    else config.get("connection_template"))
        if template is None:
            raise MetadataError("template-resolution-failed", "Connection template not defined for the source")
        request = self._request_context(args["request_context"])
        role = next((v for k, v in request["session"].items() if k == ROLE_KEY), None)
        if not role:
            raise MetadataError("invalid-params", "No `x-hasura-role` found in session variables. Please try again "
                                "with non-admin 'x-hasura-role' in the session context.")
        if role == ADMIN:
            raise MetadataError("invalid-params", "Only requests made with a non-admin context can resolve the "
                                "connection template. Please try again with non-admin 'x-hasura-role' in the "
                                "session context.")
        override = self.route_overrides.get((request.get("query") or {}).get("operation_name") or "")
        if override is not None:
            return {"result": override}
        members = [m["name"] for m in config.get("connection_set", [])]
        context = {"request": request, "primary": "PRIMARY", "read_replicas": "READ_REPLICAS", "default": "DEFAULT",
                   "connection_set": {m: {"type": "connection_set", "name": m} for m in members}}
        try:
            value = aeson.to_python(run_eval(template["template"], parse_kriti(template["template"]),
                                             {"$": aeson.from_python(context)}))
        except KritiError as exc:
            raise MetadataError("template-resolution-failed",
                                f"Connection template evaluation failed: {exc.message}") from None
        if isinstance(value, str) and value in TAGS:
            return {"result": {"routing_to": TAGS[value], "value": None}}
        if (isinstance(value, dict) and value.get("type") == "connection_set" and isinstance(value.get("name"), str)
                and value["name"]):
            return {"result": {"routing_to": "connection_set", "value": value["name"]}}
        raise MetadataError("parse-failed", f"not a resolved connection template: {json.dumps(value)[:200]}")

    @staticmethod
    def _request_context(context: Any) -> dict:
        """`FromJSON RequestContext`: headers and session default to {}, query is optional; what the template
        sees (session names lower-cased by SessionVariables' ToJSON, the operation name omitted when absent)."""
        _keys(context, set(), {"headers", "session", "query"}, "request_context")
        out: dict[str, Any] = {}
        for part in ("headers", "session"):
            values = context.get(part) or {}
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                raise MetadataError("parse-failed", f"request_context.{part}: an object of strings")
            out[part] = {k.lower(): v for k, v in values.items()} if part == "session" else dict(values)
        query = context.get("query")
        if query is not None:
            _keys(query, {"operation_type"}, {"operation_name"}, "request_context.query")
            if query["operation_type"] not in ("query", "mutation", "subscription"):
                raise MetadataError("parse-failed", "operation type can only be one of the following: query, "
                                    "mutation or subscription")
            name = query.get("operation_name")
            if name is not None and not (isinstance(name, str) and GRAPHQL_NAME.match(name)):
                raise MetadataError("parse-failed", f"operation_name: {name!r} is not a valid GraphQL name")
            out["query"] = {k: v for k, v in query.items() if v is not None}
        return out

    # --------------------------------------------------------------- commands
    def _pg_track_table(self, md: dict, args: Any) -> None:
        _keys(args, {"source", "table"}, {"configuration"})
        table = _keys(args["table"], {"schema", "name"}, set(), "table")
        if (table["schema"], table["name"]) not in self.table_columns:
            raise MetadataError("invalid-configuration", f"no such table in the database: {table}")
        source = self._source(md, args["source"])
        if any(t["table"] == table for t in source["tables"]):
            raise MetadataError("already-tracked", f"view/table already tracked: {table['name']}")
        source["tables"].append({"table": table})

    def _pg_create_select_permission(self, md: dict, args: Any) -> None:
        _keys(args, {"source", "table", "role", "permission"}, {"comment"})
        permission = _keys(args["permission"], {"columns", "filter"},
                           {"limit", "allow_aggregations", "query_root_fields", "subscription_root_fields",
                            "computed_fields"}, "permission")
        entry = self._table(md, args)
        known = self.table_columns[(entry["table"]["schema"], entry["table"]["name"])]
        columns = permission["columns"]
        if columns != "*" and (not isinstance(columns, list) or not set(columns) <= known):
            raise MetadataError("validation-failed", f"unknown columns {sorted(set(columns) - known)}")
        if not isinstance(permission["filter"], dict):
            raise MetadataError("parse-failed", "filter must be a boolean expression object")
        for key, allowed in (("query_root_fields", ROOT_FIELDS_QUERY),
                             ("subscription_root_fields", ROOT_FIELDS_SUBSCRIPTION)):
            if key in permission and not set(permission[key]) <= allowed:
                raise MetadataError("parse-failed", f"{key}: unknown root fields")
        if "limit" in permission and not (isinstance(permission["limit"], int) and permission["limit"] >= 0):
            raise MetadataError("parse-failed", "limit must be a non-negative integer")
        perms = entry.setdefault("select_permissions", [])
        if any(p["role"] == args["role"] for p in perms):
            raise MetadataError("already-exists", f"select permission for role {args['role']} already exists")
        perms.append({"role": args["role"], "permission": permission})

    def _pg_drop_select_permission(self, md: dict, args: Any) -> None:
        _keys(args, {"source", "table", "role"})
        entry = self._table(md, args)
        perms = entry.get("select_permissions", [])
        if not any(p["role"] == args["role"] for p in perms):
            raise MetadataError("not-exists", f"no select permission for role {args['role']}")
        entry["select_permissions"] = [p for p in perms if p["role"] != args["role"]]

    def _set_custom_types(self, md: dict, args: Any) -> None:
        _keys(args, set(), {"objects", "input_objects", "scalars", "enums"})
        for obj in args.get("objects", []):
            _keys(obj, {"name", "fields"}, {"description", "relationships"}, "object")
            for field in obj["fields"]:
                _keys(field, {"name", "type"}, {"description", "arguments"}, "field")
                if not GRAPHQL_TYPE.match(field["type"]):
                    raise MetadataError("parse-failed", f"bad GraphQL type {field['type']!r}")
        md["custom_types"] = copy.deepcopy(args)

    def _known_types(self, md: dict) -> set[str]:
        custom = md.get("custom_types", {})
        return BUILTIN_SCALARS | {t["name"] for kind in ("objects", "scalars", "enums") for t in custom.get(kind, [])}

    def _check_definition(self, md: dict, definition: Any) -> None:
        _keys(definition, {"arguments", "output_type", "handler"},
              {"kind", "type", "headers", "forward_client_headers", "timeout", "request_transform",
               "response_transform"}, "definition")
        if definition.get("kind", "synchronous") not in ("synchronous", "asynchronous"):
            raise MetadataError("parse-failed", "kind must be synchronous|asynchronous")
        if definition.get("type", "mutation") not in ("mutation", "query"):
            raise MetadataError("parse-failed", "type must be mutation|query")
        if definition["output_type"].strip("[]!") not in self._known_types(md):
            raise MetadataError("validation-failed", f"output type {definition['output_type']!r} is not defined")
        for argument in definition["arguments"]:
            _keys(argument, {"name", "type"}, {"description"}, "argument")
            if argument["type"].strip("[]!") not in self._known_types(md):
                raise MetadataError("validation-failed", f"argument type {argument['type']!r} is not defined")
        for header in definition.get("headers", []):
            _keys(header, {"name"}, {"value", "value_from_env"}, "header")
            if ("value" in header) == ("value_from_env" in header):
                raise MetadataError("parse-failed", "a header needs exactly one of value, value_from_env")
        if not isinstance(definition["handler"], str) or not definition["handler"]:
            raise MetadataError("parse-failed", "handler must be a URL or {{ENV}} template")

    def _create_action(self, md: dict, args: Any) -> None:
        _keys(args, {"name", "definition"}, {"comment"})
        self._check_definition(md, args["definition"])
        actions = md.setdefault("actions", [])
        if any(a["name"] == args["name"] for a in actions):
            raise MetadataError("already-exists", f"action {args['name']} already exists")
        actions.append({"name": args["name"], "definition": args["definition"], "permissions": []})

    def _update_action(self, md: dict, args: Any) -> None:
        _keys(args, {"name", "definition"}, {"comment"})
        self._check_definition(md, args["definition"])
        action = next((a for a in md.get("actions", []) if a["name"] == args["name"]), None)
        if action is None:
            raise MetadataError("not-exists", f"action {args['name']} does not exist")
        action["definition"] = args["definition"]

    def _create_action_permission(self, md: dict, args: Any) -> None:
        _keys(args, {"action", "role"}, {"definition", "comment"})
        action = next((a for a in md.get("actions", []) if a["name"] == args["action"]), None)
        if action is None:
            raise MetadataError("not-exists", f"action {args['action']} does not exist")
        if any(p["role"] == args["role"] for p in action["permissions"]):
            raise MetadataError("already-exists", f"permission for role {args['role']} already exists")
        action["permissions"].append({"role": args["role"]})


def serve(standin: HasuraStandIn, port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != "/v1/metadata":
                self.send_response(404)
                self.end_headers()
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except json.JSONDecodeError:
                status, answer = 400, {"code": "parse-failed", "error": "invalid JSON"}
            else:
                status, answer = standin.handle(body, self.headers.get("X-Hasura-Admin-Secret"))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
