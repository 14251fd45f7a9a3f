package io.sagaflow.connect;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.math.BigDecimal;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.sun.net.httpserver.HttpServer;
import org.apache.avro.Conversions;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.connect.data.Decimal;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.data.Timestamp;
import org.apache.kafka.connect.errors.DataException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class SagaflowAvroConverterTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** Schemas the fake registry serves, by id. */
    private final Map<Integer, String> schemas = new ConcurrentHashMap<>();
    private final AtomicInteger requests = new AtomicInteger();
    private final Map<String, String> lastHeaders = new ConcurrentHashMap<>();
    private HttpServer server;
    private String url;
    private SagaflowAvroConverter converter;

    @BeforeEach
    void startRegistry() throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/schemas/ids/", exchange -> {
            requests.incrementAndGet();
            String auth = exchange.getRequestHeaders().getFirst("Authorization");
            if (auth != null) {
                lastHeaders.put("Authorization", auth);
            }
            String path = exchange.getRequestURI().getPath();
            String idText = path.substring("/schemas/ids/".length());
            String schema = null;
            try {
                schema = schemas.get(Integer.parseInt(idText));
            } catch (NumberFormatException ignored) {
                // 404 below
            }
            byte[] body;
            int status;
            if (schema == null) {
                status = 404;
                body = "{\"error_code\":40403,\"message\":\"Schema not found\"}".getBytes(StandardCharsets.UTF_8);
            } else {
                status = 200;
                body = JSON.writeValueAsBytes(Map.of("schema", schema));
            }
            exchange.getResponseHeaders().add("Content-Type", "application/vnd.schemaregistry.v1+json");
            exchange.sendResponseHeaders(status, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.start();
        url = "http://127.0.0.1:" + server.getAddress().getPort();
        converter = new SagaflowAvroConverter();
        converter.configure(Map.of(SagaflowAvroConverter.SCHEMA_REGISTRY_URL_CONFIG, url), false);
    }

    @AfterEach
    void stopRegistry() {
        server.stop(0);
    }

    private static org.apache.avro.Schema sagaEventSchema() throws IOException {
        try (InputStream in = SagaflowAvroConverterTest.class.getResourceAsStream("/SagaEvent.avsc")) {
            return new org.apache.avro.Schema.Parser().parse(in);
        }
    }

    /** Confluent wire format: magic 0, 4-byte big-endian id, Avro binary. */
    private static byte[] encode(int id, org.apache.avro.Schema schema, Object datum) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(0);
        out.write(ByteBuffer.allocate(4).putInt(id).array());
        GenericData data = new GenericData();
        data.addLogicalTypeConversion(new Conversions.DecimalConversion());
        BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
        new GenericDatumWriter<>(schema, data).write(datum, enc);
        enc.flush();
        return out.toByteArray();
    }

    private static GenericRecord sagaEvent(org.apache.avro.Schema schema, long seq, boolean withOptionals) {
        GenericRecord r = new GenericData.Record(schema);
        r.put("event_id", "order-42/" + seq);
        r.put("saga_id", "order-42");
        r.put("seq", seq);
        r.put("type", new GenericData.EnumSymbol(schema.getField("type").schema(),
                withOptionals ? "STEP_FAILED" : "SAGA_STARTED"));
        r.put("definition", "order");
        r.put("version", 3);
        r.put("at", 1_700_000_000_000L + seq);
        if (withOptionals) {
            r.put("step", "reserve");
            r.put("attempt", 2);
            r.put("detail_json", "{\"error\":\"out of stock\"}");
            r.put("due", 1_700_000_005_000L);
            r.put("input_json", "{\"reply\":{}}");
            r.put("status", "COMPENSATING");
            r.put("index_json", "{\"customer\":\"c1\"}");
        }
        return r;
    }

    @Test
    void decodesSagaEventWithNullsAndWithValues() throws IOException {
        org.apache.avro.Schema avro = sagaEventSchema();
        schemas.put(7, avro.toString());

        SchemaAndValue bare = converter.toConnectData("g.events", encode(7, avro, sagaEvent(avro, 1, false)));
        Schema schema = bare.schema();
        assertEquals(Schema.Type.STRUCT, schema.type());
        assertEquals("io.sagaflow.SagaEvent", schema.name());
        assertTrue(schema.doc().startsWith("One state transition of a saga"));
        assertEquals(Schema.Type.STRING, schema.field("event_id").schema().type());
        assertEquals("saga_id/seq.", schema.field("event_id").schema().doc());
        assertEquals(Schema.Type.INT64, schema.field("seq").schema().type());
        assertEquals(Schema.Type.STRING, schema.field("type").schema().type());
        assertEquals("io.sagaflow.EventType",
                schema.field("type").schema().parameters().get(SagaflowAvroConverter.ENUM_PARAMETER));
        assertEquals(Schema.Type.INT32, schema.field("version").schema().type());
        assertTrue(!schema.field("seq").schema().isOptional());
        for (String optional : List.of("step", "attempt", "detail_json", "due", "input_json", "status", "index_json")) {
            assertTrue(schema.field(optional).schema().isOptional(), optional);
        }
        assertEquals(Schema.Type.INT32, schema.field("attempt").schema().type());
        assertEquals(Schema.Type.INT64, schema.field("due").schema().type());
        assertEquals(14, schema.fields().size());

        Struct s = (Struct) bare.value();
        s.validate();
        assertEquals("order-42/1", s.getString("event_id"));
        assertEquals("order-42", s.getString("saga_id"));
        assertEquals(1L, s.getInt64("seq"));
        assertEquals("SAGA_STARTED", s.getString("type"));
        assertEquals("order", s.getString("definition"));
        assertEquals(3, s.getInt32("version"));
        assertEquals(1_700_000_000_001L, s.getInt64("at"));
        assertNull(s.get("step"));
        assertNull(s.get("attempt"));
        assertNull(s.get("detail_json"));
        assertNull(s.get("due"));
        assertNull(s.get("status"));

        SchemaAndValue full = converter.toConnectData("g.events", encode(7, avro, sagaEvent(avro, 2, true)));
        assertSame(schema, full.schema(), "the Connect schema is cached per id");
        Struct f = (Struct) full.value();
        f.validate();
        assertEquals("STEP_FAILED", f.getString("type"));
        assertEquals("reserve", f.getString("step"));
        assertEquals(2, f.getInt32("attempt"));
        assertEquals("{\"error\":\"out of stock\"}", f.getString("detail_json"));
        assertEquals(1_700_000_005_000L, f.getInt64("due"));
        assertEquals("{\"reply\":{}}", f.getString("input_json"));
        assertEquals("COMPENSATING", f.getString("status"));
        assertEquals("{\"customer\":\"c1\"}", f.getString("index_json"));
    }

    @Test
    void decodesNestedRecordArrayMapAndLogicalTypes() throws IOException {
        String json = "{\"type\":\"record\",\"name\":\"Outer\",\"namespace\":\"t\",\"fields\":["
                + "{\"name\":\"inner\",\"type\":{\"type\":\"record\",\"name\":\"Inner\",\"fields\":["
                + "  {\"name\":\"n\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"boolean\"}]}},"
                + "{\"name\":\"maybe\",\"type\":[\"null\",\"Inner\"],\"default\":null},"
                + "{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"string\"}},"
                + "{\"name\":\"inners\",\"type\":{\"type\":\"array\",\"items\":\"Inner\"}},"
                + "{\"name\":\"counts\",\"type\":{\"type\":\"map\",\"values\":[\"null\",\"long\"]}},"
                + "{\"name\":\"f\",\"type\":\"float\"},{\"name\":\"d\",\"type\":\"double\"},"
                + "{\"name\":\"raw\",\"type\":\"bytes\"},"
                + "{\"name\":\"fx\",\"type\":{\"type\":\"fixed\",\"name\":\"Four\",\"size\":4}},"
                + "{\"name\":\"ts\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}},"
                + "{\"name\":\"amount\",\"type\":{\"type\":\"bytes\",\"logicalType\":\"decimal\",\"precision\":9,\"scale\":2}},"
                + "{\"name\":\"label\",\"type\":\"string\",\"default\":\"none\"}"
                + "]}";
        org.apache.avro.Schema avro = new org.apache.avro.Schema.Parser().parse(json);
        schemas.put(1, json);
        org.apache.avro.Schema innerSchema = avro.getField("inner").schema();
        GenericRecord inner = new GenericData.Record(innerSchema);
        inner.put("n", 5);
        inner.put("b", true);
        GenericRecord inner2 = new GenericData.Record(innerSchema);
        inner2.put("n", 6);
        inner2.put("b", false);
        GenericRecord r = new GenericData.Record(avro);
        r.put("inner", inner);
        r.put("maybe", null);
        r.put("tags", List.of("a", "b"));
        r.put("inners", List.of(inner, inner2));
        Map<String, Object> counts = new LinkedHashMap<>();
        counts.put("x", 1L);
        counts.put("y", null);
        r.put("counts", counts);
        r.put("f", 1.5f);
        r.put("d", 2.25d);
        r.put("raw", ByteBuffer.wrap(new byte[] {1, 2, 3}));
        r.put("fx", new GenericData.Fixed(avro.getField("fx").schema(), new byte[] {9, 8, 7, 6}));
        r.put("ts", 1_700_000_000_123L);
        r.put("amount", new BigDecimal("1234.56"));
        r.put("label", "x");

        SchemaAndValue sv = converter.toConnectData("t", encode(1, avro, r));
        Struct s = (Struct) sv.value();
        s.validate();
        Schema schema = sv.schema();
        assertEquals(Schema.Type.STRUCT, schema.field("inner").schema().type());
        assertEquals("t.Inner", schema.field("inner").schema().name());
        assertTrue(schema.field("maybe").schema().isOptional());
        assertEquals(Schema.Type.ARRAY, schema.field("tags").schema().type());
        assertEquals(Schema.Type.MAP, schema.field("counts").schema().type());
        assertEquals(Schema.Type.STRING, schema.field("counts").schema().keySchema().type());
        assertTrue(schema.field("counts").schema().valueSchema().isOptional());
        assertEquals(Schema.Type.BYTES, schema.field("fx").schema().type());
        assertEquals(Timestamp.LOGICAL_NAME, schema.field("ts").schema().name());
        assertEquals(Decimal.LOGICAL_NAME, schema.field("amount").schema().name());
        assertEquals("none", schema.field("label").schema().defaultValue());

        assertEquals(5, s.getStruct("inner").getInt32("n"));
        assertEquals(true, s.getStruct("inner").getBoolean("b"));
        assertNull(s.get("maybe"));
        assertEquals(List.of("a", "b"), s.getArray("tags"));
        List<Struct> inners = s.getArray("inners");
        assertEquals(6, inners.get(1).getInt32("n"));
        Map<String, Long> got = s.getMap("counts");
        assertEquals(1L, got.get("x"));
        assertTrue(got.containsKey("y") && got.get("y") == null);
        assertEquals(1.5f, s.getFloat32("f"));
        assertEquals(2.25d, s.getFloat64("d"));
        assertArrayEquals(new byte[] {1, 2, 3}, s.getBytes("raw"));
        assertArrayEquals(new byte[] {9, 8, 7, 6}, s.getBytes("fx"));
        assertEquals(new java.util.Date(1_700_000_000_123L), s.get("ts"));
        assertEquals(new BigDecimal("1234.56"), s.get("amount"));
        assertEquals("x", s.getString("label"));
    }

    @Test
    void topLevelPrimitiveAndEnum() throws IOException {
        String json = "{\"type\":\"enum\",\"name\":\"Color\",\"symbols\":[\"RED\",\"GREEN\"]}";
        org.apache.avro.Schema avro = new org.apache.avro.Schema.Parser().parse(json);
        schemas.put(3, json);
        SchemaAndValue sv = converter.toConnectData("t",
                encode(3, avro, new GenericData.EnumSymbol(avro, "GREEN")));
        assertEquals(Schema.Type.STRING, sv.schema().type());
        assertEquals("GREEN", sv.value());

        schemas.put(4, "\"string\"");
        sv = converter.toConnectData("t", encode(4, org.apache.avro.Schema.create(org.apache.avro.Schema.Type.STRING), "saga-1"));
        assertEquals(Schema.STRING_SCHEMA, sv.schema());
        assertEquals("saga-1", sv.value());
    }

    @Test
    void nullBytesAreNull() {
        assertSame(SchemaAndValue.NULL, converter.toConnectData("g.events", null));
        assertEquals(0, requests.get());
    }

    @Test
    void badMagicByteIsADataException() {
        DataException e = assertThrows(DataException.class,
                () -> converter.toConnectData("g.events", new byte[] {1, 0, 0, 0, 7, 2, 2}));
        assertTrue(e.getMessage().contains("magic byte"), e.getMessage());
        assertTrue(e.getMessage().contains("g.events"), e.getMessage());
        e = assertThrows(DataException.class, () -> converter.toConnectData("g.events", new byte[] {0, 0}));
        assertTrue(e.getMessage().contains("wire format"), e.getMessage());
        assertEquals(0, requests.get());
    }

    @Test
    void unknownIdIsADataExceptionNamingTheId() {
        DataException e = assertThrows(DataException.class,
                () -> converter.toConnectData("g.events", new byte[] {0, 0, 0, 0x30, 0x39, 2}));
        assertTrue(e.getMessage().contains("12345"), e.getMessage());
        assertTrue(e.getMessage().contains(url), e.getMessage());
        assertTrue(e.getMessage().contains("404"), e.getMessage());
        assertTrue(e.getMessage().contains("g.events"), e.getMessage());
        assertEquals(0, converter.cachedSchemas(), "a failure is not cached");
    }

    @Test
    void unreachableRegistryIsADataException() throws IOException {
        int port;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0)) {
            port = s.getLocalPort();
        }
        SagaflowAvroConverter c = new SagaflowAvroConverter();
        c.configure(Map.of(SagaflowAvroConverter.SCHEMA_REGISTRY_URL_CONFIG, "http://127.0.0.1:" + port + "/"), true);
        DataException e = assertThrows(DataException.class,
                () -> c.toConnectData("g.events", new byte[] {0, 0, 0, 0, 9, 2}));
        assertTrue(e.getMessage().contains("no Schema Registry reachable"), e.getMessage());
        assertTrue(e.getMessage().contains("127.0.0.1:" + port), e.getMessage());
        assertTrue(e.getMessage().contains("schema id 9"), e.getMessage());
    }

    @Test
    void fallsBackToTheNextUrlWhenOneIsUnreachable() throws IOException {
        int port;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0)) {
            port = s.getLocalPort();
        }
        schemas.put(2, "\"long\"");
        SagaflowAvroConverter c = new SagaflowAvroConverter();
        c.configure(Map.of(SagaflowAvroConverter.SCHEMA_REGISTRY_URL_CONFIG,
                "http://127.0.0.1:" + port + "," + url), false);
        SchemaAndValue sv = c.toConnectData("t",
                encode(2, org.apache.avro.Schema.create(org.apache.avro.Schema.Type.LONG), 42L));
        assertEquals(42L, sv.value());
    }

    @Test
    void schemaIsFetchedOncePerId() throws IOException {
        org.apache.avro.Schema avro = sagaEventSchema();
        schemas.put(11, avro.toString());
        for (int i = 1; i <= 100; i++) {
            Struct s = (Struct) converter.toConnectData("g.events", encode(11, avro, sagaEvent(avro, i, i % 2 == 0))).value();
            assertEquals((long) i, s.getInt64("seq"));
        }
        assertEquals(1, requests.get());
        assertEquals(1, converter.cachedSchemas());
    }

    @Test
    void unsupportedUnionIsADataException() throws IOException {
        String json = "{\"type\":\"record\",\"name\":\"U\",\"fields\":[{\"name\":\"x\",\"type\":[\"int\",\"string\"]}]}";
        schemas.put(5, json);
        org.apache.avro.Schema avro = new org.apache.avro.Schema.Parser().parse(json);
        GenericRecord r = new GenericData.Record(avro);
        r.put("x", 1);
        DataException e = assertThrows(DataException.class, () -> converter.toConnectData("t", encode(5, avro, r)));
        assertTrue(e.getMessage().contains("union"), e.getMessage());
        assertTrue(e.getMessage().contains("id 5"), e.getMessage());
    }

    @Test
    void truncatedPayloadIsADataException() throws IOException {
        org.apache.avro.Schema avro = sagaEventSchema();
        schemas.put(7, avro.toString());
        byte[] full = encode(7, avro, sagaEvent(avro, 1, true));
        byte[] cut = java.util.Arrays.copyOf(full, 12);
        DataException e = assertThrows(DataException.class, () -> converter.toConnectData("g.events", cut));
        assertTrue(e.getMessage().contains("schema id 7"), e.getMessage());
    }

    @Test
    void basicAuthIsSent() throws IOException {
        schemas.put(2, "\"int\"");
        SagaflowAvroConverter c = new SagaflowAvroConverter();
        Map<String, Object> cfg = new HashMap<>();
        cfg.put(SagaflowAvroConverter.SCHEMA_REGISTRY_URL_CONFIG, url);
        cfg.put(SagaflowAvroConverter.BASIC_AUTH_USER_INFO_CONFIG, "sr:secret");
        c.configure(cfg, false);
        c.toConnectData("t", encode(2, org.apache.avro.Schema.create(org.apache.avro.Schema.Type.INT), 1));
        assertEquals("Basic " + Base64.getEncoder().encodeToString("sr:secret".getBytes(StandardCharsets.UTF_8)),
                lastHeaders.get("Authorization"));
    }

    @Test
    void missingUrlIsAClearConfigException() {
        ConfigException e = assertThrows(ConfigException.class,
                () -> new SagaflowAvroConverter().configure(Map.of(), false));
        assertTrue(e.getMessage().contains("value.converter.schema.registry.url"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> new SagaflowAvroConverter().configure(Map.of(), true));
        assertTrue(e.getMessage().contains("key.converter.schema.registry.url"), e.getMessage());
    }

    @Test
    void writingIsRefused() {
        DataException e = assertThrows(DataException.class,
                () -> converter.fromConnectData("t", Schema.STRING_SCHEMA, "x"));
        assertTrue(e.getMessage().contains("sink"), e.getMessage());
    }
}
