"""moto's server, plus SageMaker's UpdateEndpoint, which moto does not implement (it answers 500).

The production rehearsal deploys twice, and the second deployment updates the endpoint to a new
config (blue/green). Here the endpoint takes the new config at once and stays InService, as an
update ends on AWS; an unknown endpoint or config is refused as AWS refuses it. Run with the
bake's environment: `python moto_server.py -H 127.0.0.1 -p PORT` (moto_server's arguments).
"""

from __future__ import annotations

from moto.core.responses import ActionResult
from moto.sagemaker.responses import SageMakerResponse
from moto.server import main


def update_endpoint(self: SageMakerResponse) -> ActionResult:
    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    backend.describe_endpoint(name)  # moto's ValidationError for an unknown endpoint
    endpoint = backend.create_endpoint(
        endpoint_name=name,
        endpoint_config_name=self._get_param("EndpointConfigName"),
        tags=backend.endpoints[name].tags,
    )
    return ActionResult({"EndpointArn": endpoint.arn})


SageMakerResponse.update_endpoint = update_endpoint

if __name__ == "__main__":
    main()
