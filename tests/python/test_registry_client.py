"""Confluent's Python SchemaRegistryClient against Sagaflow's built-in schema registry.

The registry must already be running; its URL comes from SAGAFLOW_REGISTRY_URL:

    sagaflow registry --bootstrap 127.0.0.1:9092 --listen 127.0.0.1:8081 &
    SAGAFLOW_REGISTRY_URL=http://127.0.0.1:8081 .venv/bin/pytest tests/python

Every test uses its own subjects, so the suite can run against a registry that already
holds data. Tests that change the global compatibility level restore it afterwards.
"""

import json
import os
import uuid

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

ORDER_V1 = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "acme",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": "long"},
        ],
    }
)
# Adds an optional field: backward and forward compatible with v1.
ORDER_V2 = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "acme",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": "long"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
)
# Adds a required field: not backward compatible with v1.
ORDER_BREAKING = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "acme",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": "long"},
            {"name": "currency", "type": "string"},
        ],
    }
)


@pytest.fixture(scope="session")
def registry_url():
    url = os.environ.get("SAGAFLOW_REGISTRY_URL")
    if not url:
        pytest.fail(
            "SAGAFLOW_REGISTRY_URL is not set. Start the registry with "
            "`sagaflow registry --bootstrap HOST:PORT --listen 127.0.0.1:PORT` and export "
            "SAGAFLOW_REGISTRY_URL=http://127.0.0.1:PORT before running these tests.",
            pytrace=False,
        )
    return url


@pytest.fixture
def new_client(registry_url):
    """Builds clients with empty caches, so every lookup really goes to the registry."""
    clients = []

    def build():
        client = SchemaRegistryClient({"url": registry_url})
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def client(new_client):
    return new_client()


@pytest.fixture
def subject():
    return f"py-{uuid.uuid4().hex[:12]}-value"


def avro(schema_str):
    return Schema(schema_str, "AVRO")


def expect_error(call, http_status, error_code):
    with pytest.raises(SchemaRegistryError) as caught:
        call()
    error = caught.value
    assert (error.http_status_code, error.error_code) == (http_status, error_code), str(error)
    assert error.error_message, "errors carry a message"
    return error.error_message


def test_schema_types(client):
    assert client.get_schema_types() == ["AVRO"]


def test_register_get_and_lookup(client, new_client, subject):
    schema_id = client.register_schema(subject, avro(ORDER_V1))
    assert schema_id > 0

    fresh = new_client()
    assert fresh.get_schema(schema_id).schema_str == ORDER_V1
    # Registering the identical schema again returns the same id and adds no version.
    assert fresh.register_schema(subject, avro(ORDER_V1)) == schema_id

    latest = fresh.get_latest_version(subject)
    assert (latest.subject, latest.version, latest.schema_id) == (subject, 1, schema_id)
    assert latest.schema.schema_str == ORDER_V1

    v2_id = fresh.register_schema(subject, avro(ORDER_V2))
    assert v2_id != schema_id
    assert fresh.get_versions(subject) == [1, 2]
    first = fresh.get_version(subject, 1)
    assert (first.version, first.schema_id) == (1, schema_id)
    assert new_client().get_latest_version(subject).version == 2

    found = new_client().lookup_schema(subject, avro(ORDER_V2))
    assert (found.subject, found.version, found.schema_id) == (subject, 2, v2_id)

    assert subject in fresh.get_subjects()

    # The same schema under another subject reuses the global id.
    other = subject.replace("-value", "-copy")
    assert fresh.register_schema(other, avro(ORDER_V1)) == schema_id


def test_compatibility_checks(client, subject):
    client.register_schema(subject, avro(ORDER_V1))
    assert client.test_compatibility(subject, avro(ORDER_V2)) is True
    assert client.test_compatibility(subject, avro(ORDER_BREAKING)) is False
    assert client.test_compatibility(subject, avro(ORDER_BREAKING), version=1) is False
    assert client.test_compatibility_all_versions(subject, avro(ORDER_V2)) is True

    message = expect_error(lambda: client.register_schema(subject, avro(ORDER_BREAKING)), 409, 409)
    assert "currency" in message

    # Relaxing the subject's level lets the breaking change in.
    assert client.set_compatibility(subject_name=subject, level="NONE") == {"compatibility": "NONE"}
    assert client.test_compatibility(subject, avro(ORDER_BREAKING)) is True
    assert client.register_schema(subject, avro(ORDER_BREAKING)) > 0
    assert client.get_versions(subject) == [1, 2]


def test_subject_and_global_compatibility(client, subject):
    expect_error(lambda: client.get_compatibility(subject), 404, 40408)
    assert client.set_compatibility(subject_name=subject, level="full_transitive") == {
        "compatibility": "FULL_TRANSITIVE"
    }
    assert client.get_compatibility(subject) == "FULL_TRANSITIVE"

    original = client.get_compatibility()
    try:
        assert client.set_compatibility(level="FORWARD") == {"compatibility": "FORWARD"}
        assert client.get_compatibility() == "FORWARD"
        # The subject keeps its own level.
        assert client.get_compatibility(subject) == "FULL_TRANSITIVE"
    finally:
        client.set_compatibility(level=original)
    assert client.get_compatibility() == original

    expect_error(lambda: client.set_compatibility(subject_name=subject, level="SIDEWAYS"), 422, 42203)


def test_delete_subject(client, new_client, subject):
    first_id = client.register_schema(subject, avro(ORDER_V1))
    client.register_schema(subject, avro(ORDER_V2))

    expect_error(lambda: client.delete_subject(subject, permanent=True), 404, 40405)
    assert client.delete_subject(subject) == [1, 2]
    fresh = new_client()
    assert subject not in fresh.get_subjects()
    assert subject in fresh.get_subjects(deleted=True)
    expect_error(lambda: fresh.get_latest_version(subject), 404, 40401)
    expect_error(lambda: fresh.delete_subject(subject), 404, 40404)
    # Records written with a soft-deleted schema stay decodable.
    assert fresh.get_schema(first_id).schema_str == ORDER_V1

    assert fresh.delete_subject(subject, permanent=True) == [1, 2]
    expect_error(lambda: new_client().get_versions(subject, deleted=True), 404, 40401)


def test_delete_version(client, subject):
    client.register_schema(subject, avro(ORDER_V1))
    client.register_schema(subject, avro(ORDER_V2))
    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    expect_error(lambda: client.delete_version(subject, 2), 404, 40406)
    assert client.delete_version(subject, 2, permanent=True) == 2


def test_error_codes(client, subject):
    expect_error(lambda: client.get_latest_version(subject), 404, 40401)
    client.register_schema(subject, avro(ORDER_V1))
    expect_error(lambda: client.get_version(subject, 42), 404, 40402)
    expect_error(lambda: client.get_schema(2_000_000_000), 404, 40403)
    expect_error(lambda: client.lookup_schema(subject, avro(ORDER_V2)), 404, 40403)
    message = expect_error(
        lambda: client.register_schema(subject, avro('{"type": "record", "name": "NoFields"}')),
        422,
        42201,
    )
    assert "fields" in message
    message = expect_error(
        lambda: client.register_schema(subject, Schema('syntax = "proto3";', "PROTOBUF")), 422, 42201
    )
    assert "AVRO" in message


def test_avro_serializer_round_trip(registry_url, new_client):
    topic = f"py-orders-{uuid.uuid4().hex[:12]}"
    serializer = AvroSerializer(new_client(), ORDER_V1)
    context = SerializationContext(topic, MessageField.VALUE)
    order = {"id": "o-1", "amount": 4200}

    data = serializer(order, context)
    assert data[0] == 0, "Confluent wire format magic byte"
    schema_id = int.from_bytes(data[1:5], "big")
    assert new_client().get_latest_version(f"{topic}-value").schema_id == schema_id

    # A deserializer with its own client must fetch the writer schema by id.
    deserializer = AvroDeserializer(new_client())
    assert deserializer(data, context) == order
