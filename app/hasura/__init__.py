"""The Hasura model shared by the Pulumi program and the bootstrap Job: metadata, source settings, Kriti.

Pure (no I/O): `metadata` plans the metadata API commands, `source` the source's configuration and routing
cases, `connection_template` the offline check of a Kriti connection template.
"""
