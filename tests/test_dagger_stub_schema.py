"""The stub engine's SDL must be a faithful subset of Dagger's published schema."""

from __future__ import annotations

from pathlib import Path

import graphql
import pytest
from dagger_stub.server import SCHEMA_FILE

# The stub engine fixtures (stub, dagger_stub, make_task); see dagger_stub/fixtures.py.
pytest_plugins = ["dagger_stub.fixtures"]

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "dagger" / "schema-v0.21.8.graphqls"


@pytest.fixture(scope="module")
def reference() -> graphql.GraphQLSchema:
    if not REFERENCE.exists():
        pytest.skip(f"Dagger's schema is not beside the repository (looked for {REFERENCE})")
    return graphql.build_schema(REFERENCE.read_text())


def _stub() -> graphql.GraphQLSchema:
    return graphql.build_schema(SCHEMA_FILE.read_text())


def _named_types(schema: graphql.GraphQLSchema) -> dict[str, graphql.GraphQLNamedType]:
    return {name: t for name, t in schema.type_map.items() if not name.startswith("__")}


def test_every_stub_type_exists_with_the_same_kind(reference):
    for name, stub_type in _named_types(_stub()).items():
        assert name in reference.type_map, f"type {name} is not in Dagger's schema"
        assert type(reference.type_map[name]) is type(stub_type), name


def test_every_field_has_dagger_type_and_arguments(reference):
    for name, stub_type in _named_types(_stub()).items():
        if not isinstance(stub_type, (graphql.GraphQLObjectType, graphql.GraphQLInterfaceType)):
            continue
        real = reference.type_map[name]
        for field_name, field in stub_type.fields.items():
            assert field_name in real.fields, f"{name}.{field_name} is not in Dagger's schema"
            real_field = real.fields[field_name]
            assert str(field.type) == str(real_field.type), f"{name}.{field_name}"
            stub_args = {a: str(v.type) for a, v in field.args.items()}
            real_args = {a: str(v.type) for a, v in real_field.args.items()}
            assert stub_args == real_args, f"{name}.{field_name} arguments"


def test_enum_and_input_members_exist(reference):
    for name, stub_type in _named_types(_stub()).items():
        real = reference.type_map[name]
        if isinstance(stub_type, graphql.GraphQLEnumType):
            assert set(stub_type.values) <= set(real.values), name
        if isinstance(stub_type, graphql.GraphQLInputObjectType):
            stub_fields = {f: str(v.type) for f, v in stub_type.fields.items()}
            real_fields = {f: str(v.type) for f, v in real.fields.items()}
            assert stub_fields == real_fields, name


def test_queries_the_sdk_sends_validate_against_dagger(reference, stub, make_task, tmp_path):
    """Every query of a real executor run is valid against Dagger's own schema."""
    from dagnb.executors.base import Input
    from dagnb.executors.dagger.executor import DaggerExecutor
    from dagnb.executors.loop import run_sync
    from dagnb.model.step import Step

    (tmp_path / "in").mkdir()
    step = Step("all", run="echo hi > $DAGNB_OUT/x", secrets=["T"], mounts={"in": "/in"},
                cache_volumes={"pip": "/root/.cache/pip"}, workdir="/w", params={"a": 1})
    task = make_task(step, secrets={"T": "v"}, base_dir=tmp_path,
                     inputs={"up": Input("up", tmp_path / "in")})
    run_sync(DaggerExecutor().execute(task))
    queries = [q for q in stub.texts() if "IntrospectionQuery" not in q]
    assert len(queries) > 5
    for query in queries:
        errors = graphql.validate(reference, graphql.parse(query))
        assert not errors, (query, errors)
