//! The built-in schema registry against a real broker, driven by independent clients:
//! schema_registry_converter (what Rust participants use) and raw HTTP for error codes; it
//! survives its own restart and its broker's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use apache_avro::types::Value as Avro;
use sagaflow_registry::{RegistryConfig, RunningRegistry};
use sagaflow_tests::Broker;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{
    get_all_subjects, get_all_versions, get_schema_by_id, get_schema_by_subject_and_version,
    is_compatible_schema, post_schema, SrSettings,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::{json, Value};

const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"acme",
  "fields":[{"name":"id","type":"string"},{"name":"amount","type":"long"}]}"#;
/// Adds an optional field: backward compatible with v1.
const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"acme",
  "fields":[{"name":"id","type":"string"},{"name":"amount","type":"long"},
            {"name":"note","type":["null","string"],"default":null}]}"#;
/// Adds a required field: not backward compatible.
const ORDER_BREAKING: &str = r#"{"type":"record","name":"Order","namespace":"acme",
  "fields":[{"name":"id","type":"string"},{"name":"amount","type":"long"},
            {"name":"currency","type":"string"}]}"#;

/// A topic no other test uses, so tests can share one broker.
fn unique_topic() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "_schemas-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn start_registry(bootstrap: &str, topic: &str) -> RunningRegistry {
    let mut config = RegistryConfig::new(
        sagaflow_tests::kafka_settings(bootstrap),
        sagaflow_kafka::TopicPolicy::LOCAL,
        "127.0.0.1:0".parse().unwrap(),
    );
    config.topic = topic.to_owned();
    sagaflow_registry::start(config)
        .await
        .unwrap_or_else(|e| panic!("registry on {bootstrap}, topic {topic}: {e}"))
}

fn avro_schema(schema: &str) -> SuppliedSchema {
    SuppliedSchema::new(Some("acme.Order".into()), SchemaType::Avro, schema.into())
}

/// Raw HTTP access, to see status codes and Confluent error codes.
struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(registry: &RunningRegistry) -> Http {
        Http {
            base: registry.url(),
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            content_type, "application/vnd.schemaregistry.v1+json",
            "{path}"
        );
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered non-JSON {text:?}: {e}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None).await
    }

    async fn register(&self, subject: &str, schema: &str) -> (u16, Value) {
        let path = format!("/subjects/{subject}/versions");
        self.send("POST", &path, Some(json!({ "schema": schema })))
            .await
    }

    /// Asserts a Confluent error and returns its message.
    fn expect_error(response: (u16, Value), status: u16, code: u64) -> String {
        let (actual_status, body) = response;
        assert_eq!(actual_status, status, "{body}");
        assert_eq!(body["error_code"].as_u64(), Some(code), "{body}");
        body["message"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn avro_round_trip_through_schema_registry_converter() {
    let broker = Broker::for_test();
    let registry = start_registry(&broker.bootstrap(), &unique_topic()).await;
    let settings = SrSettings::new(registry.url());

    let encoder = AvroEncoder::new(settings.clone());
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "orders".into(),
        false,
        avro_schema(ORDER_V1),
    );
    let fields = vec![
        ("id", Avro::String("o-1".into())),
        ("amount", Avro::Long(4200)),
    ];
    let bytes = encoder.encode(fields.clone(), strategy).await.unwrap();
    assert_eq!(bytes[0], 0, "Confluent wire format magic byte");
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    assert_eq!(id, 1);

    // A fresh decoder has no cache: it must fetch the schema by id from the registry.
    let decoder = AvroDecoder::new(SrSettings::new(registry.url()));
    let decoded = decoder.decode(Some(&bytes)).await.unwrap();
    let expected = Avro::Record(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    );
    assert_eq!(decoded.value, expected);

    let by_id = get_schema_by_id(id, &settings).await.unwrap();
    assert_eq!(by_id.schema, ORDER_V1);
    let v1 = get_schema_by_subject_and_version(&settings, "orders-value", Some(1))
        .await
        .unwrap();
    assert_eq!((v1.id, v1.version), (id, Some(1)));

    // Registering again is idempotent; a compatible change gets a new version and id.
    let again = post_schema(&settings, "orders-value".into(), avro_schema(ORDER_V1))
        .await
        .unwrap();
    assert_eq!(again.id, id);
    assert!(
        is_compatible_schema(&settings, "orders-value".into(), avro_schema(ORDER_V2))
            .await
            .unwrap()
    );
    assert!(!is_compatible_schema(
        &settings,
        "orders-value".into(),
        avro_schema(ORDER_BREAKING)
    )
    .await
    .unwrap());
    let v2 = post_schema(&settings, "orders-value".into(), avro_schema(ORDER_V2))
        .await
        .unwrap();
    assert_eq!(v2.id, 2);
    let latest = get_schema_by_subject_and_version(&settings, "orders-value", None)
        .await
        .unwrap();
    assert_eq!((latest.id, latest.version), (2, Some(2)));
    assert_eq!(
        get_all_versions(&settings, "orders-value".into())
            .await
            .unwrap(),
        vec![1, 2]
    );

    // The same schema under another subject shares the global id.
    let archived = post_schema(&settings, "archive-value".into(), avro_schema(ORDER_V1))
        .await
        .unwrap();
    assert_eq!(archived.id, id);
    assert_eq!(
        get_all_subjects(&settings).await.unwrap(),
        vec!["archive-value", "orders-value"]
    );

    // Lookup: which version of the subject holds this schema.
    let http = Http::new(&registry);
    let (status, found) = http
        .send(
            "POST",
            "/subjects/orders-value",
            Some(json!({ "schema": ORDER_V2 })),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (&found["subject"], &found["version"], &found["id"]),
        (&json!("orders-value"), &json!(2), &json!(2))
    );
    assert_eq!(http.get("/schemas/types").await, (200, json!(["AVRO"])));
    registry.shutdown().await;
}

#[tokio::test]
async fn errors_carry_confluent_codes() {
    let broker = Broker::for_test();
    let registry = start_registry(&broker.bootstrap(), &unique_topic()).await;
    let http = Http::new(&registry);

    let message = Http::expect_error(http.get("/subjects/nope/versions").await, 404, 40401);
    assert!(message.contains("'nope'"), "{message}");

    let (status, id) = http.register("orders-value", ORDER_V1).await;
    assert_eq!((status, id), (200, json!({ "id": 1 })));
    Http::expect_error(
        http.get("/subjects/orders-value/versions/7").await,
        404,
        40402,
    );
    Http::expect_error(
        http.get("/subjects/orders-value/versions/0").await,
        422,
        42202,
    );
    Http::expect_error(http.get("/schemas/ids/99").await, 404, 40403);
    Http::expect_error(
        http.send(
            "POST",
            "/subjects/orders-value",
            Some(json!({ "schema": ORDER_V2 })),
        )
        .await,
        404,
        40403,
    );

    let message = Http::expect_error(
        http.register("orders-value", r#"{"type":"record","name":"Broken"}"#)
            .await,
        422,
        42201,
    );
    assert!(
        message.contains("fields"),
        "the parser's reason is included: {message}"
    );
    Http::expect_error(http.register("orders-value", "{not json").await, 422, 42201);

    let message = Http::expect_error(
        http.register("orders-value", ORDER_BREAKING).await,
        409,
        409,
    );
    assert!(message.contains("'currency'"), "{message}");
    assert_eq!(
        http.get("/subjects/orders-value/versions").await,
        (200, json!([1])),
        "a rejected schema adds no version"
    );

    Http::expect_error(
        http.send(
            "PUT",
            "/config",
            Some(json!({ "compatibility": "SIDEWAYS" })),
        )
        .await,
        422,
        42203,
    );
    Http::expect_error(http.get("/config/orders-value").await, 404, 40408);
    Http::expect_error(http.get("/no/such/endpoint").await, 404, 404);

    // Plain application/json bodies are accepted too.
    let response = reqwest::Client::new()
        .post(format!("{}/subjects/plain/versions", registry.url()))
        .header("Content-Type", "application/json")
        .body(json!({ "schema": "\"string\"" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    registry.shutdown().await;
}

#[tokio::test]
async fn compatibility_config_and_deletion() {
    let broker = Broker::for_test();
    let registry = start_registry(&broker.bootstrap(), &unique_topic()).await;
    let http = Http::new(&registry);

    assert_eq!(
        http.get("/config").await,
        (200, json!({ "compatibilityLevel": "BACKWARD" }))
    );
    assert_eq!(
        http.send("PUT", "/config", Some(json!({ "compatibility": "FULL" })))
            .await,
        (200, json!({ "compatibility": "FULL" }))
    );
    assert_eq!(
        http.get("/config").await,
        (200, json!({ "compatibilityLevel": "FULL" }))
    );
    assert_eq!(
        http.get("/config/orders-value?defaultToGlobal=true").await,
        (200, json!({ "compatibilityLevel": "FULL" }))
    );

    assert_eq!(http.register("orders-value", ORDER_V1).await.0, 200);
    let verbose = http
        .send(
            "POST",
            "/compatibility/subjects/orders-value/versions/latest?verbose=true",
            Some(json!({ "schema": ORDER_BREAKING })),
        )
        .await;
    assert_eq!(verbose.0, 200);
    assert_eq!(verbose.1["is_compatible"], json!(false));
    let messages = verbose.1["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.as_str().unwrap().contains("currency")),
        "{messages:?}"
    );

    // Per-subject level overrides the global one.
    assert_eq!(
        http.send(
            "PUT",
            "/config/orders-value",
            Some(json!({ "compatibility": "none" })),
        )
        .await,
        (200, json!({ "compatibility": "NONE" }))
    );
    assert_eq!(
        http.get("/config/orders-value").await,
        (200, json!({ "compatibilityLevel": "NONE" }))
    );
    assert_eq!(
        http.send(
            "POST",
            "/compatibility/subjects/orders-value/versions/1",
            Some(json!({ "schema": ORDER_BREAKING })),
        )
        .await,
        (200, json!({ "is_compatible": true }))
    );
    assert_eq!(
        http.register("orders-value", ORDER_BREAKING).await,
        (200, json!({ "id": 2 }))
    );
    assert_eq!(
        http.send("DELETE", "/config/orders-value", None).await,
        (200, json!({ "compatibilityLevel": "NONE" }))
    );
    Http::expect_error(http.get("/config/orders-value").await, 404, 40408);

    let (status, raw) = http.get("/subjects/orders-value/versions/1/schema").await;
    assert_eq!(status, 200);
    assert_eq!(raw, serde_json::from_str::<Value>(ORDER_V1).unwrap());

    // Soft delete hides the subject, permanent delete removes it.
    Http::expect_error(
        http.send("DELETE", "/subjects/orders-value?permanent=true", None)
            .await,
        404,
        40405,
    );
    assert_eq!(
        http.send("DELETE", "/subjects/orders-value", None).await,
        (200, json!([1, 2]))
    );
    assert_eq!(http.get("/subjects").await, (200, json!([])));
    assert_eq!(
        http.get("/subjects?deleted=true").await,
        (200, json!(["orders-value"]))
    );
    Http::expect_error(
        http.get("/subjects/orders-value/versions").await,
        404,
        40401,
    );
    // Old records stay decodable: ids survive a soft delete.
    assert_eq!(http.get("/schemas/ids/1").await.0, 200);
    assert_eq!(
        http.send("DELETE", "/subjects/orders-value?permanent=true", None)
            .await,
        (200, json!([1, 2]))
    );
    Http::expect_error(http.get("/schemas/ids/1").await, 404, 40403);

    // Single versions.
    assert_eq!(http.register("payments-value", ORDER_V1).await.0, 200);
    assert_eq!(http.register("payments-value", ORDER_V2).await.0, 200);
    assert_eq!(
        http.send("DELETE", "/subjects/payments-value/versions/latest", None)
            .await,
        (200, json!(2))
    );
    assert_eq!(
        http.get("/subjects/payments-value/versions").await,
        (200, json!([1]))
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn state_survives_a_restart() {
    let broker = Broker::for_test();
    let topic = unique_topic();
    let registry = start_registry(&broker.bootstrap(), &topic).await;
    let http = Http::new(&registry);
    assert_eq!(
        http.register("orders-value", ORDER_V1).await,
        (200, json!({ "id": 1 }))
    );
    assert_eq!(
        http.register("orders-value", ORDER_V2).await,
        (200, json!({ "id": 2 }))
    );
    assert_eq!(
        http.register("archive-value", ORDER_V1).await,
        (200, json!({ "id": 1 }))
    );
    assert_eq!(http.register("scratch", "\"string\"").await.0, 200);
    http.send(
        "PUT",
        "/config/archive-value",
        Some(json!({ "compatibility": "FORWARD" })),
    )
    .await;
    http.send("PUT", "/config", Some(json!({ "compatibility": "FULL" })))
        .await;
    http.send("DELETE", "/subjects/scratch", None).await;
    registry.shutdown().await;

    let registry = start_registry(&broker.bootstrap(), &topic).await;
    let http = Http::new(&registry);
    assert_eq!(
        http.get("/subjects").await,
        (200, json!(["archive-value", "orders-value"]))
    );
    assert_eq!(
        http.get("/subjects/orders-value/versions").await,
        (200, json!([1, 2]))
    );
    let (status, latest) = http.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(status, 200);
    assert_eq!((&latest["version"], &latest["id"]), (&json!(2), &json!(2)));
    assert_eq!(latest["schema"], json!(ORDER_V2));
    let (_, by_id) = http.get("/schemas/ids/1").await;
    assert_eq!(by_id["schema"], json!(ORDER_V1));
    assert_eq!(
        http.get("/config").await,
        (200, json!({ "compatibilityLevel": "FULL" }))
    );
    assert_eq!(
        http.get("/config/archive-value").await,
        (200, json!({ "compatibilityLevel": "FORWARD" }))
    );
    assert_eq!(
        http.get("/subjects/scratch/versions?deleted=true").await,
        (200, json!([1]))
    );
    // Registering an existing schema returns its id; a new one continues the sequence.
    assert_eq!(
        http.register("orders-value", ORDER_V2).await,
        (200, json!({ "id": 2 }))
    );
    assert_eq!(
        http.register("events", "\"long\"").await,
        (200, json!({ "id": 4 }))
    );
    // The decoder resolves ids written before the restart.
    let settings = SrSettings::new(registry.url());
    let bytes = AvroEncoder::new(settings.clone())
        .encode(
            vec![
                ("id", Avro::String("o-2".into())),
                ("amount", Avro::Long(1)),
            ],
            SubjectNameStrategy::TopicNameStrategyWithSchema(
                "orders".into(),
                false,
                avro_schema(ORDER_V1),
            ),
        )
        .await
        .unwrap();
    assert_eq!(&bytes[1..5], &1u32.to_be_bytes());
    let decoded = AvroDecoder::new(settings)
        .decode(Some(&bytes))
        .await
        .unwrap();
    assert!(matches!(decoded.value, Avro::Record(_)));
    registry.shutdown().await;
}

/// A broker crash and restart under a running registry: it registers schemas again once the
/// broker is back (a failed write in between is an error the client can retry, never a schema
/// half-registered), and a registry started afterwards reads what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_goes_on_after_its_broker_restarts() {
    let broker = std::sync::Arc::new(Broker::start());
    if !broker.is_local() {
        eprintln!("skipped: SAGAFLOW_BOOTSTRAP names a broker this test cannot restart");
        return;
    }
    let topic = unique_topic();
    let registry = start_registry(&broker.bootstrap(), &topic).await;
    let http = Http::new(&registry);
    assert_eq!(
        http.register("orders-value", ORDER_V1).await,
        (200, json!({ "id": 1 }))
    );

    let restarted = broker.clone();
    tokio::task::spawn_blocking(move || restarted.kill9_and_restart())
        .await
        .expect("restart the broker");
    let started = std::time::Instant::now();
    let mut answer = http.register("orders-value", ORDER_V2).await;
    while answer.0 != 200 && started.elapsed() < std::time::Duration::from_secs(120) {
        // What a client sees meanwhile: a Confluent error, retryable.
        assert!(answer.0 >= 500, "{answer:?}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        answer = http.register("orders-value", ORDER_V2).await;
    }
    assert_eq!(
        answer,
        (200, json!({ "id": 2 })),
        "after {:?}",
        started.elapsed()
    );
    assert_eq!(
        http.get("/subjects/orders-value/versions").await,
        (200, json!([1, 2]))
    );
    registry.shutdown().await;

    let registry = start_registry(&broker.bootstrap(), &topic).await;
    let http = Http::new(&registry);
    assert_eq!(
        http.get("/subjects/orders-value/versions").await,
        (200, json!([1, 2]))
    );
    assert_eq!(http.get("/schemas/ids/2").await.0, 200);
    registry.shutdown().await;
}
