#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Seeds are real inputs in each target's framing (documented at the top of each file in
fuzz_targets/). They are generated rather than written by hand because several are binary: Avro
bodies encoded with the schemas in avro/schemas/, and registry request scripts separated by 0xFF.
Run it again after a schema or an example changes; it only overwrites its own files.

Usage: python3 fuzz/make_seeds.py
"""

import json
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
SCHEMAS = ROOT / "avro" / "schemas"

# Order of sagaflow_avro::schemas::ALL: the `inputs` target picks a record type by this index.
ALL = [
    "StartSaga", "Command", "Reply", "SagaEvent", "SagaState",
    "JournalRecord", "Checkpoint", "Signal", "Parked", "Correlation",
]


def write(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / name).write_bytes(data)


# ---- Avro binary encoding (the subset the contracts use) ----

def long_bytes(n):
    n = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class Encoder:
    def __init__(self):
        self.named = {}

    def register(self, schema, namespace=None):
        """Records every named type so later references by name resolve."""
        if isinstance(schema, list):
            for branch in schema:
                self.register(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema["type"]
            if kind in ("record", "enum", "fixed"):
                namespace = schema.get("namespace", namespace)
                name = schema["name"]
                full = name if "." in name or not namespace else f"{namespace}.{name}"
                self.named[full] = schema
                self.named[name] = schema
                for field in schema.get("fields", []):
                    self.register(field["type"], namespace)
            elif kind == "array":
                self.register(schema["items"], namespace)
            elif kind == "map":
                self.register(schema["values"], namespace)

    def resolve(self, schema):
        if isinstance(schema, str) and schema in self.named:
            return self.named[schema]
        return schema

    def encode(self, schema, value):
        schema = self.resolve(schema)
        if isinstance(schema, list):
            if value is None:
                return long_bytes(schema.index("null")) + b""
            index = next(i for i, b in enumerate(schema) if b != "null")
            return long_bytes(index) + self.encode(schema[index], value)
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind == "null":
            return b""
        if kind == "boolean":
            return b"\x01" if value else b"\x00"
        if kind in ("int", "long"):
            return long_bytes(value)
        if kind == "double":
            return struct.pack("<d", value)
        if kind == "float":
            return struct.pack("<f", value)
        if kind in ("string", "bytes"):
            data = value.encode() if isinstance(value, str) else bytes(value)
            return long_bytes(len(data)) + data
        if kind == "enum":
            return long_bytes(schema["symbols"].index(value))
        if kind == "array":
            if not value:
                return b"\x00"
            items = b"".join(self.encode(schema["items"], v) for v in value)
            return long_bytes(len(value)) + items + b"\x00"
        if kind == "record":
            return b"".join(
                self.encode(f["type"], value[f["name"]]) for f in schema["fields"]
            )
        if isinstance(schema, dict):  # {"type": "string"} and the like
            return self.encode(kind, value)
        raise ValueError(f"unsupported schema {schema!r}")

    def sample(self, schema, name="x"):
        """A plausible value for any schema: every optional branch filled, one item per list."""
        schema = self.resolve(schema)
        if isinstance(schema, list):
            branch = next(b for b in schema if b != "null")
            return self.sample(branch, name)
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind == "boolean":
            return False
        if kind in ("int", "long"):
            return 1_767_225_600_000 if kind == "long" and name.endswith(("_at", "due")) else 1
        if kind == "string":
            return "{}" if name.endswith("_json") else f"{name}-1"
        if kind == "bytes":
            return b"\x00\x00\x00\x00\x01" + name.encode()
        if kind == "enum":
            return schema["symbols"][0]
        if kind == "array":
            return [self.sample(schema["items"], name)]
        if kind == "record":
            return {f["name"]: self.sample(f["type"], f["name"]) for f in schema["fields"]}
        if isinstance(schema, dict):
            return self.sample(kind, name)
        raise ValueError(f"unsupported schema {schema!r}")


def load_schemas():
    encoder = Encoder()
    schemas = {}
    for name in ALL:
        schema = json.loads((SCHEMAS / f"{name}.avsc").read_text())
        encoder.register(schema)
        schemas[name] = schema
    return encoder, schemas


# ---- targets ----

def definition():
    for path in sorted(ROOT.glob("examples/**/*.yaml")):
        shutil.copyfile(path, CORPUS / "definition" / path.name)


def template():
    paths = ["$", "$.amount", "$.customer.id", "$.order.lines", "$.items.0.sku",
             "$.flight_booking_id", "$$.literal", "$.a..b", "$.a[0]"]
    for i, path in enumerate(paths):
        write("template", f"path-{i}", path)
    payloads = [
        {"amount": "$.amount", "currency": "$.currency", "customer": "$.customer.id"},
        {"flight": "$.flight.number", "date": "$.flight.date", "passenger": "$.customer.id"},
        {"order": "$.order.id", "lines": "$.order.lines"},
        {"to": "$.customer.email", "template": "trip-confirmed", "payment_id": "$.payment_id"},
        {"lines": ["$.customer.id", 1, "$$.literal", "$$$"], "all": "$", "n": None},
        ["$.customer.tags.1", {"nested": {"deep": "$.none"}}, True, 2.5],
    ]
    for i, payload in enumerate(payloads):
        write("template", f"payload-{i}", json.dumps(payload))


def inputs(encoder, schemas):
    signal = {"signal_id": "s-1", "event": "customer_confirmed", "correlation": "o-17",
              "payload_json": '{"confirmed": true}', "sent_at": 1_767_225_600_000,
              "ttl_ms": 86_400_000}
    start = {"request_id": "r-1", "saga_id": "trip-1", "definition": "trip", "version": None,
             "input_json": '{"amount": 1250, "customer": {"id": "c-42"}}',
             "requested_at": 1_767_225_600_000}
    special = {"Signal": signal, "StartSaga": start}
    for index, name in enumerate(ALL):
        schema = schemas[name]
        value = special.get(name) or encoder.sample(schema)
        write("inputs", f"{index}-{name}", bytes([index, 0]) + encoder.encode(schema, value))
        # With every optional field absent (defaults) as well, where that differs.
        minimal = {
            f["name"]: f["default"] if "default" in f and f["default"] is None else value[f["name"]]
            for f in schema["fields"]
        }
        if minimal != value:
            write("inputs", f"{index}-{name}-minimal",
                  bytes([index, 0]) + encoder.encode(schema, minimal))


def delay():
    requests = {
        "rfc3339": "sagaflow-delay-topic=trip.payment.commands\n"
                   "sagaflow-delay-until=2026-07-01T09:00:00+02:00\n",
        "epoch-ms": "sagaflow-delay-topic=out\nsagaflow-delay-until=1767225600000\nx=y",
        "repeated": "sagaflow-delay-topic=first\nsagaflow-delay-topic=out\n"
                    "sagaflow-delay-until= 123 \ntraceparent=00-abc-def-01",
        "no-offset": "sagaflow-delay-topic=out\nsagaflow-delay-until=2026-07-01T09:00:00",
        "date-only": "sagaflow-delay-topic=out\nsagaflow-delay-until=2026-07-01",
        "self": "sagaflow-delay-topic=g.delay\nsagaflow-delay-until=1",
        "no-time": "sagaflow-delay-topic=out",
    }
    for name, text in requests.items():
        write("delay", name, text)


def correlation(encoder, schemas):
    signal_schema = schemas["Signal"]
    signal = {"signal_id": "s-1", "event": "customer_confirmed", "correlation": "o-17",
              "payload_json": '{"confirmed": true}', "sent_at": 1_767_225_600_000,
              "ttl_ms": None}
    body = encoder.encode(signal_schema, signal)
    write("correlation", "signal", b"\x01" + body)
    write("correlation", "signal-no-payload",
          b"\x01" + encoder.encode(signal_schema, {**signal, "payload_json": None}))
    write("correlation", "signal-list-payload",
          b"\x01" + encoder.encode(signal_schema, {**signal, "payload_json": "[1]"}))
    wire = b"\x00\x00\x00\x00\x07" + body
    for kind in ["SUBSCRIBE", "UNSUBSCRIBE", "DELIVER", "RETURN"]:
        message = {"kind": kind, "event": "customer_confirmed", "correlation": "o-17",
                   "saga_id": "order-1", "step": "confirm",
                   "signal": wire if kind in ("DELIVER", "RETURN") else None}
        write("correlation", kind.lower(),
              b"\x00" + encoder.encode(schemas["Correlation"], message))


def registry_bodies():
    order_v1 = ('{"type":"record","name":"Order","namespace":"acme",'
                '"fields":[{"name":"id","type":"string"},{"name":"amount","type":"long"}]}')
    order_v2 = ('{"type":"record","name":"Order","namespace":"acme",'
                '"fields":[{"name":"id","type":"string"},{"name":"amount","type":"long"},'
                '{"name":"note","type":["null","string"],"default":null}]}')
    order_breaking = ('{"type":"record","name":"Order","namespace":"acme",'
                      '"fields":[{"name":"id","type":"string"},{"name":"amount","type":"long"},'
                      '{"name":"currency","type":"string"}]}')
    address = ('{"type":"record","name":"Address","namespace":"acme",'
               '"fields":[{"name":"city","type":"string"}]}')
    customer = ('{"type":"record","name":"Customer","namespace":"acme",'
                '"fields":[{"name":"home","type":"Address"}]}')
    enum_abc = '{"type":"enum","name":"E","symbols":["A","B","C"]}'
    enum_ab = '{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}'

    orders, addresses, customers, other = 0, 1, 2, 3

    def schema(text, **extra):
        return json.dumps({"schema": text, **extra})

    def script(*requests):
        return b"\xff".join(bytes([op, subject]) + body.encode() for op, subject, body in requests)

    write("registry_bodies", "evolve", script(
        (0, orders, schema(order_v1)),
        (0, orders, schema(order_v2)),
        (1, orders, schema(order_v1)),
        (2, orders, json.dumps({"schema": order_breaking, "schemaType": "AVRO"})),
        (3, orders, schema(order_breaking)),
        (0, orders, schema(order_breaking)),
    ))
    write("registry_bodies", "config", script(
        (5, orders, '{"compatibility": "FULL"}'),
        (4, orders, '{"compatibilityLevel": "none"}'),
        (0, orders, schema(order_v1)),
        (0, orders, schema(order_breaking)),
        (6, orders, ""),
        (5, orders, '{"compatibility": "SIDEWAYS"}'),
        (4, orders, "{}"),
        (5, orders, " "),
    ))
    write("registry_bodies", "references", script(
        (0, addresses, schema(address)),
        (0, customers, schema(customer, references=[
            {"name": "acme.Address", "subject": "address-value", "version": 1}])),
        (7, addresses, ""),
        (2, customers, schema(customer, references=[
            {"name": "acme.Address", "subject": "address-value", "version": 1}])),
        (0, other, schema(customer, references=[
            {"name": "acme.Address", "subject": "address-value", "version": 9}])),
    ))
    write("registry_bodies", "delete", script(
        (0, other, schema('"string"')),
        (0, other, schema(enum_abc)),
        (0, other, schema(enum_ab)),
        (9, other, "1"),
        (10, other, "1"),
        (9, other, "latest"),
        (7, other, ""),
        (8, other, ""),
        (8, other, ""),
        (0, other, schema('{"type":"string"}')),
    ))
    write("registry_bodies", "bad-bodies", script(
        (0, orders, '{"schema": {"type": "string"}}'),
        (0, orders, '{"schemaType": "PROTOBUF", "schema": "syntax = \\"proto3\\";"}'),
        (0, orders, '{"schema": null}'),
        (0, orders, "[1, 2]"),
        (0, orders, '{"schema": "{not json"}'),
        (0, orders, '{"schema": "{\\"type\\":\\"record\\",\\"fields\\":[]}"}'),
        (9, orders, "0"),
        (9, orders, "-1"),
    ))
    # `_schemas` records as Confluent's registry and ours write them.
    record_key = '{"keytype":"SCHEMA","subject":"orders-value","version":2,"magic":1}'
    record_value = json.dumps({"subject": "orders-value", "version": 2, "id": 7,
                               "schema": order_v1, "deleted": False})
    write("registry_bodies", "restore", script(
        (11, orders, record_key + "\x00" + record_value),
        (11, orders, '{"keytype":"CONFIG","subject":null,"magic":0}\x00'
                     '{"compatibilityLevel":"FULL"}'),
        (11, orders, '{"keytype":"DELETE_SUBJECT","subject":"orders-value","magic":0}\x00'
                     '{"subject":"orders-value","version":2}'),
        (11, orders, '{"keytype":"NOOP","magic":0}'),
        (11, orders, '{"keytype":"SCHEMA","subject":"orders-value","version":2,"magic":1}'),
        (0, orders, schema(order_v2)),
    ))


def main():
    encoder, schemas = load_schemas()
    for target in ["definition", "template", "inputs", "delay", "correlation",
                   "registry_bodies"]:
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
    definition()
    template()
    inputs(encoder, schemas)
    delay()
    correlation(encoder, schemas)
    registry_bodies()


if __name__ == "__main__":
    main()
