"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis), bounded in time."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from lookalike.server.api import create_app
from lookalike.server.service import ServerConfig

EXAMPLES_PER_OPERATION = 25
# A schema can say "binary file" but not "an image": schema-valid bytes that are no image are rightly refused.
NOT_APPLICABLE = {"POST /api/search": [schemathesis.checks.positive_data_acceptance]}


@pytest.fixture(scope="module")
def api_schema(five_category_collection):
    app = create_app(ServerConfig(str(five_category_collection)), with_ui=False)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.timeout(180)
def test_api_never_fails_and_keeps_to_its_schema(api_schema):
    """Whatever is sent to each operation, the answer is a documented status with a body matching
    the schema, never a server error."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /api/search", "GET /api/items/{item_id}/similar"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(excluded_checks=NOT_APPLICABLE.get(case.operation.label, []))

        check()
