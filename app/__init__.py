"""The asynchronous request/response flow behind Hasura: publisher, writer, cleanup, bootstrap."""
