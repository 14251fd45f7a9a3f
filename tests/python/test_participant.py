"""A participant written in Python with confluent-kafka, using only the .avsc files in avro/schemas
and the schema registry, drives the 4-step `bench` saga to completion through the Sagaflow engine.

Its producer keeps librdkafka's default partitioner (CRC32, not Kafka's murmur2), as a team that
never heard of Sagaflow would: the engine must route those replies to the partition of their saga.

An operator's tool in Python sends admin commands the same way, and reads their answers from the
event log.

Needs SAGAFLOW_BOOTSTRAP, SAGAFLOW_REGISTRY_URL and SAGAFLOW_BIN (scripts/python-tests.sh sets them).
"""

import json
import os
import pathlib
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "avro" / "schemas"
STEPS = ["bench.s1.commands", "bench.s2.commands", "bench.s3.commands", "bench.s4.commands"]


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/python-tests.sh, which starts what this test needs")
    return value


def schema(name):
    return (SCHEMAS / f"{name}.avsc").read_text()


@pytest.fixture(scope="module")
def engine():
    bootstrap = env("SAGAFLOW_BOOTSTRAP")
    registry = env("SAGAFLOW_REGISTRY_URL")
    group = f"py-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    futures = admin.create_topics([NewTopic(t, num_partitions=4, replication_factor=1) for t in STEPS])
    for topic, f in futures.items():
        try:
            f.result()
        except Exception as e:  # already exists is fine
            if "already exists" not in str(e).lower() and "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    state = tempfile.mkdtemp(prefix="sagaflow-py-engine-")
    proc = subprocess.Popen(
        [env("SAGAFLOW_BIN"), "engine", "--bootstrap", bootstrap, "--registry-url", registry,
         "--group", group, "--state-dir", state, "--definitions", str(ROOT / "examples"),
         "--partitions", "4", "--http-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("metrics:"), f"engine did not start: {line!r}"
    yield {"group": group, "bootstrap": bootstrap, "registry": registry, "metrics": line.split()[1]}
    proc.terminate()
    proc.wait(timeout=30)


TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def participant(bootstrap, registry_url, stop, handled, traces=None):
    """Answers every bench command with an empty success output. Like an OpenTelemetry Kafka
    instrumentation, it continues the command's W3C trace on the reply (same trace id, a span of
    its own), and records (saga id, traceparent) in `traces`."""
    registry = SchemaRegistryClient({"url": registry_url})
    decode = AvroDeserializer(registry, schema("Command"))
    encode = AvroSerializer(registry, schema("Reply"))
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "broker.address.family": "v4",
        "group.id": f"py-participant-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
    })
    consumer.subscribe(STEPS)
    producer = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    while not stop.is_set():
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        command = decode(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
        reply = {
            "message_id": f"py/{command['idempotency_key']}",
            "saga_id": command["saga_id"],
            "step": command["step"],
            "phase": command["phase"],
            "attempt": command["attempt"],
            "idempotency_key": command["idempotency_key"],
            "status": "SUCCESS",
            "output_json": json.dumps({"by": "python"}),
            "error": None,
            "replied_at": int(time.time() * 1000),
        }
        topic = command["reply_to"]
        parent = dict(msg.headers() or []).get("traceparent", b"").decode()
        if traces is not None:
            traces.append((command["saga_id"], parent))
        headers = []
        if (m := TRACEPARENT.match(parent)) is not None:
            headers.append(("traceparent", f"00-{m.group(1)}-{uuid.uuid4().hex[:16]}-{m.group(3)}"))
        producer.produce(topic, key=command["saga_id"], headers=headers,
                         value=encode(reply, SerializationContext(topic, MessageField.VALUE)))
        producer.poll(0)
        handled.append(command["idempotency_key"])
    producer.flush(10)
    consumer.close()


def test_python_participant_completes_sagas(engine):
    bootstrap, registry_url, group = engine["bootstrap"], engine["registry"], engine["group"]
    stop, handled, traces = threading.Event(), [], []
    worker = threading.Thread(target=participant, args=(bootstrap, registry_url, stop, handled, traces))
    worker.start()
    try:
        registry = SchemaRegistryClient({"url": registry_url})
        encode_start = AvroSerializer(registry, schema("StartSaga"))
        producer = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                             "partitioner": "murmur2_random"})
        starts = f"{group}.starts"
        ids = [f"py-{i}" for i in range(20)]
        for saga_id in ids:
            start = {"request_id": saga_id, "saga_id": saga_id, "definition": "bench", "version": None,
                     "input_json": json.dumps({"id": saga_id}), "requested_at": int(time.time() * 1000)}
            producer.produce(starts, key=saga_id,
                             value=encode_start(start, SerializationContext(starts, MessageField.VALUE)))
        producer.flush(30)

        decode_event = AvroDeserializer(registry, schema("SagaEvent"))
        events = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                           "group.id": f"py-events-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
        events.subscribe([f"{group}.events"])
        finished, seqs = {}, {}
        deadline = time.time() + 300
        while len(finished) < len(ids) and time.time() < deadline:
            msg = events.poll(0.5)
            if msg is None or msg.error():
                continue
            e = decode_event(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            seqs.setdefault(e["saga_id"], set()).add(e["seq"])
            if e["type"] in ("SAGA_COMPLETED", "SAGA_COMPENSATED", "SAGA_FAILED", "SAGA_INCIDENT"):
                finished[e["saga_id"]] = e["type"]
        events.close()
    finally:
        stop.set()
        worker.join(30)

    assert sorted(finished) == sorted(ids), f"finished {len(finished)}/{len(ids)}"
    assert set(finished.values()) == {"SAGA_COMPLETED"}
    for saga_id in ids:
        # SAGA_STARTED, 4 x (dispatched, succeeded), SAGA_COMPLETED
        assert seqs[saga_id] == set(range(1, 11)), saga_id
    assert len(set(handled)) == 4 * len(ids)
    # Every command carried a valid traceparent; a saga's commands share one trace, sagas differ.
    trace_of = {}
    for saga_id, header in traces:
        m = TRACEPARENT.match(header)
        assert m is not None, f"{saga_id}: traceparent {header!r}"
        assert trace_of.setdefault(saga_id, m.group(1)) == m.group(1), f"{saga_id}: two traces"
    assert len(set(trace_of.values())) == len(ids)
    # librdkafka's default partitioner put many replies on another partition than their saga's:
    # the engine forwarded them instead of dead-lettering them.
    metrics = urllib.request.urlopen(engine["metrics"], timeout=10).read().decode()
    forwarded = next(float(line.split()[1]) for line in metrics.splitlines()
                     if line.startswith("sagaflow_forwarded_inputs_total "))
    dead = [line for line in metrics.splitlines() if line.startswith("sagaflow_dead_letters_total{")]
    assert forwarded > 0, metrics
    assert dead == [], dead


def test_an_operator_in_python_pauses_and_aborts_a_saga(engine):
    """Admin commands are a public contract too: a Python client sends them as Avro, and reads
    the answers (ADMIN_COMMAND_APPLIED / _REJECTED, with its request id) from the event log."""
    bootstrap, registry_url, group = engine["bootstrap"], engine["registry"], engine["group"]
    registry = SchemaRegistryClient({"url": registry_url})
    producer = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "partitioner": "murmur2_random"})
    saga_id = f"py-admin-{uuid.uuid4().hex[:6]}"
    # No participant answers now: the saga waits at its first step.
    starts = f"{group}.starts"
    start = {"request_id": saga_id, "saga_id": saga_id, "definition": "bench", "version": None,
             "input_json": json.dumps({"id": saga_id}), "requested_at": int(time.time() * 1000)}
    producer.produce(starts, key=saga_id, value=AvroSerializer(registry, schema("StartSaga"))(
        start, SerializationContext(starts, MessageField.VALUE)))
    producer.flush(30)

    admin_topic = f"{group}.admin"
    encode = AvroSerializer(registry, schema("AdminCommand"))

    def command(action, reason):
        request_id = f"py-{uuid.uuid4().hex}"
        value = {"request_id": request_id, "saga_id": saga_id, "action": action, "step": None,
                 "output_json": None, "resolution": None, "actor": "python-ops", "reason": reason,
                 "job_id": None, "requested_at": int(time.time() * 1000)}
        producer.produce(admin_topic, key=saga_id,
                         value=encode(value, SerializationContext(admin_topic, MessageField.VALUE)))
        producer.flush(30)
        return request_id

    decode_event = AvroDeserializer(registry, schema("SagaEvent"))
    events = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                       "group.id": f"py-admin-events-{uuid.uuid4().hex[:6]}",
                       "auto.offset.reset": "earliest"})
    events.subscribe([f"{group}.events"])
    log = []

    def wait_for(predicate, what):
        deadline = time.time() + 120
        while time.time() < deadline:
            found = [e for e in log if predicate(e)]
            if found:
                return found[0]
            msg = events.poll(0.5)
            if msg is None or msg.error():
                continue
            e = decode_event(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            if e["saga_id"] == saga_id:
                log.append(e)
        pytest.fail(f"never saw {what}: {[e['type'] for e in log]}")

    def answer(request_id):
        def ours(e):
            detail = json.loads(e["detail_json"] or "null") or {}
            return e["type"].startswith("ADMIN_COMMAND_") and detail.get("request_id") == request_id
        e = wait_for(ours, f"the answer to {request_id}")
        return e["type"], json.loads(e["detail_json"])

    try:
        wait_for(lambda e: e["type"] == "STEP_DISPATCHED", "the first step dispatched")
        kind, detail = answer(command("PAUSE", "looking into it"))
        assert kind == "ADMIN_COMMAND_APPLIED", detail
        assert detail["actor"] == "python-ops"
        kind, detail = answer(command("ABORT", None))
        assert kind == "ADMIN_COMMAND_REJECTED", detail
        assert "abort needs a reason" in detail["rejection"]
        kind, detail = answer(command("ABORT", "duplicate order"))
        assert kind == "ADMIN_COMMAND_APPLIED", detail
        aborted = wait_for(lambda e: e["type"] == "SAGA_ABORTED", "SAGA_ABORTED")
        assert aborted["status"] == "ABORTED"
        assert json.loads(aborted["detail_json"])["in_flight"] == ["s1"]
    finally:
        events.close()
    types = [e["type"] for e in sorted(log, key=lambda e: e["seq"])]
    assert types[-5:] == ["ADMIN_COMMAND_APPLIED", "SAGA_PAUSED", "ADMIN_COMMAND_REJECTED",
                          "ADMIN_COMMAND_APPLIED", "SAGA_ABORTED"], types
