//! The registry client sends the credentials it is configured with, and refuses unusable
//! settings before any request.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use sagaflow_avro::{BlockingCodec, Command, RegistrySettings};

/// Serves one HTTP request with a 404 and hands back its header lines.
fn one_request() -> (String, mpsc::Receiver<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            headers.push(line.trim().to_string());
        }
        let body = r#"{"error_code":40403,"message":"Schema not found"}"#;
        let mut stream = stream;
        let _ = write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tx.send(headers);
    });
    (url, rx)
}

/// A wire-format record that names schema id 7, so decoding asks the registry for it.
const RECORD: [u8; 6] = [0, 0, 0, 0, 7, 0];

fn authorization(settings: RegistrySettings, rx: &mpsc::Receiver<Vec<String>>) -> Option<String> {
    let codec = BlockingCodec::new(&settings).expect("codec");
    let _ = codec.decode::<Command>(&RECORD).expect_err("no schema 7");
    rx.recv().expect("one request").into_iter().find_map(|h| {
        h.split_once(':')
            .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.trim().to_string())
    })
}

#[test]
fn basic_auth_is_sent() {
    let (url, rx) = one_request();
    let settings = RegistrySettings {
        basic_auth: Some("key:secret".into()),
        ..RegistrySettings::new(url)
    };
    // base64("key:secret")
    assert_eq!(
        authorization(settings, &rx).as_deref(),
        Some("Basic a2V5OnNlY3JldA==")
    );
}

#[test]
fn a_bearer_token_is_sent() {
    let (url, rx) = one_request();
    let settings = RegistrySettings {
        bearer_token: Some("t0ken".into()),
        ..RegistrySettings::new(url)
    };
    assert_eq!(
        authorization(settings, &rx).as_deref(),
        Some("Bearer t0ken")
    );
}

#[test]
fn unusable_settings_are_refused_with_the_fix() {
    let both = RegistrySettings {
        basic_auth: Some("a:b".into()),
        bearer_token: Some("t".into()),
        ..RegistrySettings::new("http://r:8081")
    };
    assert!(both
        .validate()
        .unwrap_err()
        .to_string()
        .contains("keep one"));
    let no_scheme = RegistrySettings::new("r:8081");
    assert!(no_scheme
        .validate()
        .unwrap_err()
        .to_string()
        .contains("http://"));
    let missing_ca = RegistrySettings {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..RegistrySettings::new("https://r:8081")
    };
    let err = missing_ca.validate().unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/ca.pem") && err.contains("SAGAFLOW_REGISTRY_CA_FILE"),
        "{err}"
    );
    let not_pem = std::env::temp_dir().join(format!("sagaflow-not-pem-{}", std::process::id()));
    std::fs::write(&not_pem, "hello").unwrap();
    let garbage_ca = RegistrySettings {
        ca_file: Some(not_pem.clone()),
        ..RegistrySettings::new("https://r:8081")
    };
    let err = garbage_ca.validate().unwrap_err().to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
    let _ = std::fs::remove_file(not_pem);
}
