//! How to reach the Schema Registry: its URL, credentials and trusted CA.

use std::path::PathBuf;

use schema_registry_converter::{async_impl, blocking};

use crate::error::{Error, Result};

/// The converter's blocking and async settings are two types with the same builder API: one
/// body serves both.
macro_rules! sr_settings {
    ($settings:expr, $module:path, $client:ty) => {{
        use $module as sr;
        let settings: &RegistrySettings = $settings;
        settings.validate()?;
        let mut builder = sr::SrSettings::new_builder(settings.url.clone());
        if let Some((user, password)) = settings.user_password() {
            let _ = builder.set_basic_authorization(user, Some(password));
        }
        if let Some(token) = &settings.bearer_token {
            let _ = builder.set_token_authorization(token);
        }
        let mut client = <$client>::builder();
        if let Some(file) = &settings.ca_file {
            for certificate in settings.ca_certificates(file)? {
                client = client.add_root_certificate(certificate);
            }
        }
        builder
            .build_with(client)
            .map_err(|e| Error::RegistrySettings {
                reason: format!("cannot build the registry client: {}", e.error),
            })
    }};
}

/// Where the Schema Registry is and how to authenticate to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Base URL, e.g. `https://registry.example.com:8081`.
    pub url: String,
    /// HTTP basic authentication as `user:password` (Confluent's `basic.auth.user.info`;
    /// Confluent Cloud's API key and secret).
    pub basic_auth: Option<String>,
    /// A bearer token sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl RegistrySettings {
    /// A registry at `url` without authentication.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks the settings, so that a mistake fails at start and says where it is.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Error::RegistrySettings { reason };
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(invalid(format!(
                "registry URL {:?} must start with http:// or https:// (--registry-url, SAGAFLOW_REGISTRY_URL)",
                self.url
            )));
        }
        if self.basic_auth.is_some() && self.bearer_token.is_some() {
            return Err(invalid(
                "both basic auth and a bearer token are set; keep one (SAGAFLOW_REGISTRY_BASIC_AUTH or SAGAFLOW_REGISTRY_BEARER_TOKEN)".into(),
            ));
        }
        if let Some(auth) = &self.basic_auth {
            if !auth.contains(':') {
                return Err(invalid(
                    "registry basic auth must be user:password (SAGAFLOW_REGISTRY_BASIC_AUTH)"
                        .into(),
                ));
            }
        }
        if let Some(file) = &self.ca_file {
            let _ = self.ca_certificates(file)?;
        }
        Ok(())
    }

    fn ca_certificates(&self, file: &PathBuf) -> Result<Vec<reqwest::Certificate>> {
        let pem = std::fs::read(file).map_err(|e| Error::RegistrySettings {
            reason: format!(
                "cannot read the registry CA file {}: {e} (SAGAFLOW_REGISTRY_CA_FILE)",
                file.display()
            ),
        })?;
        let certificates =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::RegistrySettings {
                reason: format!(
                    "the registry CA file {} holds no PEM certificate: {e}",
                    file.display()
                ),
            })?;
        if certificates.is_empty() {
            return Err(Error::RegistrySettings {
                reason: format!(
                    "the registry CA file {} holds no PEM certificate",
                    file.display()
                ),
            });
        }
        Ok(certificates)
    }

    fn user_password(&self) -> Option<(&str, &str)> {
        self.basic_auth.as_deref().and_then(|a| a.split_once(':'))
    }

    pub(crate) fn blocking_settings(&self) -> Result<blocking::schema_registry::SrSettings> {
        sr_settings!(self, blocking::schema_registry, reqwest::blocking::Client)
    }

    pub(crate) fn async_settings(&self) -> Result<async_impl::schema_registry::SrSettings> {
        sr_settings!(self, async_impl::schema_registry, reqwest::Client)
    }
}
