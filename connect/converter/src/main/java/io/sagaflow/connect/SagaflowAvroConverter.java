package io.sagaflow.connect;

import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.JsonProperties;
import org.apache.avro.LogicalType;
import org.apache.avro.LogicalTypes;
import org.apache.avro.SchemaParseException;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.connect.data.Date;
import org.apache.kafka.connect.data.Decimal;
import org.apache.kafka.connect.data.Field;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.data.SchemaBuilder;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.data.Time;
import org.apache.kafka.connect.data.Timestamp;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.storage.Converter;

/**
 * Reads Avro in the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary)
 * into Connect data, fetching writer schemas from a Confluent-compatible Schema Registry by id.
 * Read-only: meant as the key or value converter of a sink connector.
 */
public class SagaflowAvroConverter implements Converter {

    public static final String SCHEMA_REGISTRY_URL_CONFIG = "schema.registry.url";
    public static final String BASIC_AUTH_USER_INFO_CONFIG = "basic.auth.user.info";
    public static final String REQUEST_TIMEOUT_MS_CONFIG = "schema.registry.request.timeout.ms";

    /** Parameter on a STRING schema that came from an Avro enum: the enum's full name. */
    public static final String ENUM_PARAMETER = "io.sagaflow.connect.avro.enum";

    static final byte MAGIC_BYTE = 0;
    static final int HEADER_LENGTH = 5;

    private static final ConfigDef CONFIG_DEF = new ConfigDef()
            .define(SCHEMA_REGISTRY_URL_CONFIG, ConfigDef.Type.LIST, ConfigDef.NO_DEFAULT_VALUE,
                    ConfigDef.Importance.HIGH,
                    "Base URL(s) of the Confluent-compatible Schema Registry, comma-separated; "
                            + "tried in order while unreachable.")
            .define(BASIC_AUTH_USER_INFO_CONFIG, ConfigDef.Type.PASSWORD, null,
                    ConfigDef.Importance.MEDIUM,
                    "user:password for HTTP basic authentication to the registry; empty for none.")
            .define(REQUEST_TIMEOUT_MS_CONFIG, ConfigDef.Type.INT, 30_000, ConfigDef.Range.atLeast(1),
                    ConfigDef.Importance.LOW, "Timeout of one request to the registry, in ms.");

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Map<Integer, SchemaAndConverter> byId = new ConcurrentHashMap<>();
    private List<String> registryUrls;
    private String authorization;
    private Duration requestTimeout;
    private HttpClient http;
    private boolean isKey;

    @Override
    public String version() {
        String v = SagaflowAvroConverter.class.getPackage().getImplementationVersion();
        return v == null ? "unknown" : v;
    }

    @Override
    public ConfigDef config() {
        return CONFIG_DEF;
    }

    @Override
    public void configure(Map<String, ?> configs, boolean isKey) {
        this.isKey = isKey;
        String prefix = isKey ? "key.converter." : "value.converter.";
        Object url = configs.get(SCHEMA_REGISTRY_URL_CONFIG);
        if (url == null || url.toString().isBlank()) {
            throw new ConfigException(SCHEMA_REGISTRY_URL_CONFIG, url,
                    "SagaflowAvroConverter needs the Schema Registry's URL: set " + prefix
                            + SCHEMA_REGISTRY_URL_CONFIG + "=http://<host>:<port> in the connector (or "
                            + "the worker) config");
        }
        Map<String, Object> parsed = CONFIG_DEF.parse(configs);
        List<String> urls = new ArrayList<>();
        for (Object u : (List<?>) parsed.get(SCHEMA_REGISTRY_URL_CONFIG)) {
            String s = u.toString().trim();
            while (s.endsWith("/")) {
                s = s.substring(0, s.length() - 1);
            }
            if (!s.startsWith("http://") && !s.startsWith("https://")) {
                throw new ConfigException(SCHEMA_REGISTRY_URL_CONFIG, u,
                        "expected an http:// or https:// URL in " + prefix + SCHEMA_REGISTRY_URL_CONFIG);
            }
            urls.add(s);
        }
        this.registryUrls = List.copyOf(urls);
        org.apache.kafka.common.config.types.Password userInfo =
                (org.apache.kafka.common.config.types.Password) parsed.get(BASIC_AUTH_USER_INFO_CONFIG);
        if (userInfo != null && !userInfo.value().isEmpty()) {
            if (!userInfo.value().contains(":")) {
                throw new ConfigException(prefix + BASIC_AUTH_USER_INFO_CONFIG + " must be user:password");
            }
            this.authorization = "Basic " + Base64.getEncoder()
                    .encodeToString(userInfo.value().getBytes(StandardCharsets.UTF_8));
        } else {
            this.authorization = null;
        }
        this.requestTimeout = Duration.ofMillis((Integer) parsed.get(REQUEST_TIMEOUT_MS_CONFIG));
        this.http = HttpClient.newBuilder()
                .connectTimeout(requestTimeout)
                .followRedirects(HttpClient.Redirect.NORMAL)
                .build();
        byId.clear();
    }

    @Override
    public byte[] fromConnectData(String topic, Schema schema, Object value) {
        throw new DataException("SagaflowAvroConverter only reads: use it as the key.converter or "
                + "value.converter of a sink connector (topic " + topic + ")");
    }

    @Override
    public SchemaAndValue toConnectData(String topic, byte[] value) {
        if (value == null) {
            return SchemaAndValue.NULL;
        }
        if (http == null) {
            throw new DataException("SagaflowAvroConverter used before configure()");
        }
        String what = (isKey ? "key" : "value") + " of a record on topic " + topic;
        if (value.length < HEADER_LENGTH || value[0] != MAGIC_BYTE) {
            throw new DataException("Cannot read the " + what + ": it is not Avro in the Confluent "
                    + "wire format (expected magic byte 0 then a 4-byte schema id; got "
                    + (value.length == 0 ? "0 bytes" : "first byte " + value[0] + " of " + value.length
                    + " bytes") + "). Check that the producer writes with the Schema Registry "
                    + "serializer and that this converter is set for the right side (key/value).");
        }
        int id = ByteBuffer.wrap(value, 1, 4).getInt();
        SchemaAndConverter sc = byId.get(id);
        if (sc == null) {
            // Not computeIfAbsent: a failed fetch must not be cached, and a slow one must not
            // hold a lock in the map. Two threads may both fetch the same id once; harmless.
            sc = load(topic, id);
            SchemaAndConverter prev = byId.putIfAbsent(id, sc);
            if (prev != null) {
                sc = prev;
            }
        }
        Object avro;
        try {
            BinaryDecoder decoder = DecoderFactory.get()
                    .binaryDecoder(value, HEADER_LENGTH, value.length - HEADER_LENGTH, null);
            avro = sc.reader.read(null, decoder);
        } catch (IOException | AvroRuntimeException | IndexOutOfBoundsException
                 | NegativeArraySizeException e) {
            throw new DataException("Cannot decode the " + what + " with schema id " + id + " from "
                    + registryUrls + ": the bytes do not match the writer schema (" + e + ")", e);
        }
        return new SchemaAndValue(sc.connectSchema, toConnectValue(sc.connectSchema, avro));
    }

    /** Number of schemas cached, for tests. */
    int cachedSchemas() {
        return byId.size();
    }

    private SchemaAndConverter load(String topic, int id) {
        String json = fetchSchema(topic, id);
        org.apache.avro.Schema avroSchema;
        try {
            avroSchema = new org.apache.avro.Schema.Parser().setValidateDefaults(false).parse(json);
        } catch (SchemaParseException e) {
            throw new DataException("Schema id " + id + " from " + registryUrls + " (topic " + topic
                    + ") is not a valid Avro schema: " + e.getMessage(), e);
        }
        Schema connectSchema;
        try {
            connectSchema = toConnectSchema(avroSchema);
        } catch (DataException e) {
            throw new DataException("Schema id " + id + " (topic " + topic + ") cannot be converted "
                    + "to a Connect schema: " + e.getMessage(), e);
        }
        return new SchemaAndConverter(connectSchema, new GenericDatumReader<>(avroSchema));
    }

    private String fetchSchema(String topic, int id) {
        List<String> failures = new ArrayList<>();
        for (String base : registryUrls) {
            String url = base + "/schemas/ids/" + id;
            HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(url))
                    .timeout(requestTimeout)
                    .header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
                    .GET();
            if (authorization != null) {
                req.header("Authorization", authorization);
            }
            HttpResponse<String> resp;
            try {
                resp = http.send(req.build(), HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
            } catch (IOException e) {
                failures.add(url + ": " + e);
                continue; // unreachable: try the next URL
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new DataException("Interrupted while fetching schema id " + id + " from " + url, e);
            }
            int status = resp.statusCode();
            if (status == 404) {
                throw new DataException("Schema id " + id + " (in a record on topic " + topic
                        + ") is unknown to the Schema Registry at " + url + " (HTTP 404: "
                        + abbreviate(resp.body()) + "). Check that " + SCHEMA_REGISTRY_URL_CONFIG
                        + " points at the registry the producer wrote to.");
            }
            if (status == 401 || status == 403) {
                throw new DataException("The Schema Registry at " + url + " refused schema id " + id
                        + " (topic " + topic + ") with HTTP " + status + ": check "
                        + BASIC_AUTH_USER_INFO_CONFIG + ". " + abbreviate(resp.body()));
            }
            if (status != 200) {
                throw new DataException("The Schema Registry at " + url + " answered HTTP " + status
                        + " for schema id " + id + " (topic " + topic + "): " + abbreviate(resp.body()));
            }
            JsonNode body;
            try {
                body = JSON.readTree(resp.body());
            } catch (IOException e) {
                throw new DataException("The Schema Registry at " + url + " answered schema id " + id
                        + " (topic " + topic + ") with a body that is not JSON: " + abbreviate(resp.body()), e);
            }
            JsonNode type = body == null ? null : body.get("schemaType");
            if (type != null && !type.isNull() && !"AVRO".equalsIgnoreCase(type.asText())) {
                throw new DataException("Schema id " + id + " at " + url + " (topic " + topic + ") is a "
                        + type.asText() + " schema; this converter reads Avro only");
            }
            JsonNode refs = body == null ? null : body.get("references");
            if (refs != null && refs.isArray() && refs.size() > 0) {
                throw new DataException("Schema id " + id + " at " + url + " (topic " + topic
                        + ") has schema references, which this converter does not resolve");
            }
            JsonNode schema = body == null ? null : body.get("schema");
            if (schema == null || !schema.isTextual()) {
                throw new DataException("The Schema Registry at " + url + " answered schema id " + id
                        + " (topic " + topic + ") without a \"schema\" string: " + abbreviate(resp.body()));
            }
            return schema.asText();
        }
        throw new DataException("Cannot fetch schema id " + id + " (topic " + topic
                + "): no Schema Registry reachable. Check " + SCHEMA_REGISTRY_URL_CONFIG + " and that the "
                + "registry is up and reachable from the Connect worker. Tried: " + String.join("; ", failures));
    }

    private static String abbreviate(String s) {
        if (s == null) {
            return "";
        }
        return s.length() <= 300 ? s : s.substring(0, 300) + "...";
    }

    // ---- Avro schema -> Connect schema ----

    static Schema toConnectSchema(org.apache.avro.Schema avro) {
        return builder(avro, new ArrayDeque<>()).build();
    }

    private static SchemaBuilder builder(org.apache.avro.Schema avro, Deque<String> inProgress) {
        LogicalType logical = avro.getLogicalType();
        switch (avro.getType()) {
            case NULL:
                throw new DataException("Avro type null is only supported inside a union [\"null\", X]");
            case BOOLEAN:
                return SchemaBuilder.bool();
            case INT:
                if (logical instanceof LogicalTypes.Date) {
                    return Date.builder();
                }
                if (logical instanceof LogicalTypes.TimeMillis) {
                    return Time.builder();
                }
                return SchemaBuilder.int32();
            case LONG:
                if (logical instanceof LogicalTypes.TimestampMillis) {
                    return Timestamp.builder();
                }
                return SchemaBuilder.int64();
            case FLOAT:
                return SchemaBuilder.float32();
            case DOUBLE:
                return SchemaBuilder.float64();
            case STRING:
                return SchemaBuilder.string();
            case BYTES:
            case FIXED:
                if (logical instanceof LogicalTypes.Decimal) {
                    LogicalTypes.Decimal d = (LogicalTypes.Decimal) logical;
                    return Decimal.builder(d.getScale())
                            .parameter("connect.decimal.precision", Integer.toString(d.getPrecision()));
                }
                return SchemaBuilder.bytes();
            case ENUM:
                return SchemaBuilder.string().parameter(ENUM_PARAMETER, avro.getFullName());
            case ARRAY:
                return SchemaBuilder.array(builder(avro.getElementType(), inProgress).build());
            case MAP:
                return SchemaBuilder.map(Schema.STRING_SCHEMA, builder(avro.getValueType(), inProgress).build());
            case UNION: {
                List<org.apache.avro.Schema> types = avro.getTypes();
                if (types.size() == 2) {
                    int nullAt = types.get(0).getType() == org.apache.avro.Schema.Type.NULL ? 0
                            : types.get(1).getType() == org.apache.avro.Schema.Type.NULL ? 1 : -1;
                    if (nullAt >= 0) {
                        return builder(types.get(1 - nullAt), inProgress).optional();
                    }
                }
                throw new DataException("Avro union " + avro + " is not supported: only [\"null\", X] "
                        + "(an optional X) maps to a Connect schema");
            }
            case RECORD: {
                String name = avro.getFullName();
                if (inProgress.contains(name)) {
                    throw new DataException("Avro record " + name + " is recursive, which Connect "
                            + "schemas cannot express");
                }
                inProgress.push(name);
                SchemaBuilder struct = SchemaBuilder.struct().name(name);
                if (avro.getDoc() != null) {
                    struct.doc(avro.getDoc());
                }
                for (org.apache.avro.Schema.Field f : avro.getFields()) {
                    SchemaBuilder fb = builder(f.schema(), inProgress);
                    if (f.doc() != null && fb.doc() == null) {
                        fb.doc(f.doc());
                    }
                    setDefault(fb, f);
                    struct.field(f.name(), fb.build());
                }
                inProgress.pop();
                return struct;
            }
            default:
                throw new DataException("Avro type " + avro.getType() + " is not supported");
        }
    }

    /** Copies an Avro field default onto the Connect schema where it is a plain value. */
    private static void setDefault(SchemaBuilder fb, org.apache.avro.Schema.Field f) {
        if (!f.hasDefaultValue()) {
            return;
        }
        Object dflt;
        try {
            dflt = f.defaultVal();
        } catch (RuntimeException e) {
            return;
        }
        if (dflt == null || dflt == JsonProperties.NULL_VALUE) {
            return; // optional: null is the default already
        }
        if (fb.name() != null || !(dflt instanceof String || dflt instanceof Number || dflt instanceof Boolean)) {
            return; // logical types, records, arrays, maps, bytes: left without a default
        }
        try {
            fb.defaultValue(dflt);
        } catch (RuntimeException e) {
            // A default that does not fit the Connect type (e.g. a union's first branch): skip it.
        }
    }

    // ---- Avro value -> Connect value ----

    private static Object toConnectValue(Schema schema, Object value) {
        if (value == null) {
            if (!schema.isOptional()) {
                throw new DataException("null value for the required " + schema.type() + " schema "
                        + (schema.name() == null ? "" : schema.name()));
            }
            return null;
        }
        if (schema.name() != null) {
            switch (schema.name()) {
                case Timestamp.LOGICAL_NAME:
                case Time.LOGICAL_NAME:
                    return new java.util.Date(((Number) value).longValue());
                case Date.LOGICAL_NAME:
                    return new java.util.Date(((Number) value).longValue() * 86_400_000L);
                case Decimal.LOGICAL_NAME: {
                    int scale = Integer.parseInt(schema.parameters().get(Decimal.SCALE_FIELD));
                    return new BigDecimal(new BigInteger(bytes(value)), scale);
                }
                default:
                    break;
            }
        }
        switch (schema.type()) {
            case STRUCT: {
                GenericRecord rec = (GenericRecord) value;
                Struct struct = new Struct(schema);
                for (Field f : schema.fields()) {
                    struct.put(f, toConnectValue(f.schema(), rec.get(f.name())));
                }
                return struct;
            }
            case ARRAY: {
                Collection<?> in = (Collection<?>) value;
                List<Object> out = new ArrayList<>(in.size());
                for (Object o : in) {
                    out.add(toConnectValue(schema.valueSchema(), o));
                }
                return out;
            }
            case MAP: {
                Map<?, ?> in = (Map<?, ?>) value;
                Map<String, Object> out = new LinkedHashMap<>(in.size() * 2);
                for (Map.Entry<?, ?> e : in.entrySet()) {
                    out.put(e.getKey().toString(), toConnectValue(schema.valueSchema(), e.getValue()));
                }
                return out;
            }
            case STRING:
                return value.toString(); // Utf8, String or GenericEnumSymbol
            case BYTES:
                return bytes(value);
            case INT32:
            case INT64:
            case FLOAT32:
            case FLOAT64:
            case BOOLEAN:
                return value;
            default:
                throw new DataException("Unexpected Connect type " + schema.type());
        }
    }

    private static byte[] bytes(Object value) {
        if (value instanceof ByteBuffer) {
            ByteBuffer b = ((ByteBuffer) value).duplicate();
            byte[] out = new byte[b.remaining()];
            b.get(out);
            return out;
        }
        if (value instanceof GenericFixed) {
            return ((GenericFixed) value).bytes().clone();
        }
        if (value instanceof byte[]) {
            return (byte[]) value;
        }
        throw new DataException("Expected bytes, got " + value.getClass().getName());
    }

    private static final class SchemaAndConverter {
        final Schema connectSchema;
        final GenericDatumReader<Object> reader;

        SchemaAndConverter(Schema connectSchema, GenericDatumReader<Object> reader) {
            this.connectSchema = connectSchema;
            this.reader = reader;
        }
    }
}
