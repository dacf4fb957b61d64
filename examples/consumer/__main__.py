"""Another team's view of the entrypoint: what a consuming stack reads and re-exports.

    pulumi config set entrypointStack <org>/graphql-entrypoint/<stack>   # on a DIY backend: organization/...
"""

import pulumi

entrypoint = pulumi.StackReference(pulumi.Config().require("entrypointStack"))

# the endpoint clients call, and the topics a worker team consumes and answers on
pulumi.export("graphql_url", entrypoint.require_output("graphql_url"))
pulumi.export("graphql_websocket_url", entrypoint.require_output("graphql_websocket_url"))
pulumi.export("requests_topic", entrypoint.require_output("topics").apply(lambda t: t["requests"]))
pulumi.export("responses_topic", entrypoint.require_output("topics").apply(lambda t: t["responses"]))
pulumi.export("action", entrypoint.require_output("action"))
