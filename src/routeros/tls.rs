//! TLS for api-ssl (8729) with rustls (ring provider).
//!
//! Three ways to trust the router ([`TlsMode`]): a CA file (chain and name verified, the name
//! being the address's host, IP or DNS, unless overridden), a pinned SHA-256 fingerprint of the
//! leaf certificate (only the leaf is matched: RouterOS certificates often carry odd names), or
//! no check at all when the user asks for it explicitly. In every mode the handshake signatures
//! are still verified, so a pinned certificate cannot be replayed without its key.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{
    ring as ring_provider, verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use tokio_rustls::TlsConnector;

use super::error::{RouterError, TlsProblem};

/// How the API connection is protected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (`/ip service api`, port 8728). The password crosses the wire in clear.
    #[default]
    Plain,
    /// api-ssl (8729) with the router's certificate checked. At least one of `ca_file` and
    /// `fingerprint_sha256` must be given; with both, both must match.
    Verify {
        /// PEM file with the CA (or the router's self-signed certificate) to trust: the chain
        /// and the name (`server_name`, else the host of the address, IP or DNS) are verified.
        ca_file: Option<PathBuf>,
        /// SHA-256 of the router's leaf certificate (DER). Only the leaf is matched; its name
        /// and chain are not checked (RouterOS certificates often have odd names).
        fingerprint_sha256: Option<[u8; 32]>,
        /// The name to verify instead of the address's host.
        server_name: Option<String>,
    },
    /// api-ssl with no certificate check at all: only when the user asks for it explicitly
    /// (MIKROTIK_API_TLS_INSECURE=true). A warning is logged when the connector is built.
    Insecure,
}

/// SHA-256 of a certificate's DER: the fingerprint [`TlsMode::Verify`] pins.
pub fn fingerprint_of(cert_der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The prepared TLS client for one API address.
pub(crate) struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// `server_name` as the user wrote it, for messages.
    name: String,
}

impl TlsClient {
    /// Builds the client for `mode` (not [`TlsMode::Plain`]) and `address` (`host:port`). Reads
    /// the CA file now, so a wrong path is reported at start-up. Logs a warning for
    /// [`TlsMode::Insecure`].
    pub(crate) fn new(mode: &TlsMode, address: &str) -> Result<TlsClient, RouterError> {
        let fail = |kind: TlsProblem, message: String| RouterError::Tls {
            address: address.to_owned(),
            kind,
            message,
        };
        let provider = Arc::new(ring_provider::default_provider());
        let (verifier, name_override): (Arc<dyn ServerCertVerifier>, Option<&str>) = match mode {
            TlsMode::Plain => {
                return Err(fail(
                    TlsProblem::Settings,
                    "internal error: TLS client asked for a plain connection".into(),
                ))
            }
            TlsMode::Insecure => {
                tracing::warn!(address, "RouterOS api-ssl certificate is NOT verified (MIKROTIK_API_TLS_INSECURE=true): anyone on the path can read the API password; set MIKROTIK_API_TLS_CA_FILE or MIKROTIK_API_TLS_FINGERPRINT instead");
                (
                    Arc::new(PinnedVerifier {
                        provider: provider.clone(),
                        chain: None,
                        fingerprint: None,
                    }),
                    None,
                )
            }
            TlsMode::Verify {
                ca_file,
                fingerprint_sha256,
                server_name,
            } => {
                let chain = match ca_file {
                    None => None,
                    Some(path) => {
                        let mut roots = RootCertStore::empty();
                        let certs: Vec<CertificateDer<'static>> =
                            CertificateDer::pem_file_iter(path)
                                .and_then(|it| it.collect::<Result<_, _>>())
                                .map_err(|e| {
                                    fail(
                                        TlsProblem::BadCaFile,
                                        format!(
                                            "cannot read MIKROTIK_API_TLS_CA_FILE {}: {e}",
                                            path.display()
                                        ),
                                    )
                                })?;
                        if certs.is_empty() {
                            return Err(fail(
                                TlsProblem::BadCaFile,
                                format!(
                                    "MIKROTIK_API_TLS_CA_FILE {} holds no PEM certificate",
                                    path.display()
                                ),
                            ));
                        }
                        for cert in certs {
                            roots.add(cert).map_err(|e| {
                                fail(
                                    TlsProblem::BadCaFile,
                                    format!(
                                        "MIKROTIK_API_TLS_CA_FILE {} holds an unusable certificate: {e}",
                                        path.display()
                                    ),
                                )
                            })?;
                        }
                        let v = WebPkiServerVerifier::builder_with_provider(
                            Arc::new(roots),
                            provider.clone(),
                        )
                        .build()
                        .map_err(|e| {
                            fail(
                                TlsProblem::BadCaFile,
                                format!("cannot use MIKROTIK_API_TLS_CA_FILE: {e}"),
                            )
                        })?;
                        Some(v)
                    }
                };
                if chain.is_none() && fingerprint_sha256.is_none() {
                    return Err(fail(TlsProblem::Settings, "api-ssl needs a way to trust the router: set MIKROTIK_API_TLS_CA_FILE or MIKROTIK_API_TLS_FINGERPRINT (or, knowingly, MIKROTIK_API_TLS_INSECURE=true)".into()));
                }
                (
                    Arc::new(PinnedVerifier {
                        provider: provider.clone(),
                        chain,
                        fingerprint: *fingerprint_sha256,
                    }),
                    server_name.as_deref(),
                )
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(TlsProblem::Settings, format!("TLS set-up failed: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let host = name_override.unwrap_or_else(|| host_of(address));
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned()).map_err(|_| {
                fail(
                    TlsProblem::Settings,
                    format!("{host:?} is neither an IP address nor a DNS name usable for TLS"),
                )
            })?,
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            name: host.to_owned(),
        })
    }

    /// Runs the TLS handshake on a connected socket. The caller bounds it with its connect
    /// timeout. A refused certificate or a TLS alert is [`RouterError::Tls`]; the network
    /// failing half-way (a reset while the router reboots) is [`RouterError::Connection`].
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        address: &str,
    ) -> Result<TlsStream<TcpStream>, RouterError> {
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| match classify(&e, &self.name) {
                Some((kind, why)) => RouterError::Tls {
                    address: address.to_owned(),
                    kind,
                    message: format!("TLS handshake failed: {why}"),
                },
                None => RouterError::Connection {
                    address: address.to_owned(),
                    message: format!("TLS handshake failed: {e}"),
                },
            })
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => address,
    }
}

/// What a failed handshake means for a router owner: the kind of TLS problem and advice, or
/// `None` when it was not TLS that failed but the connection under it. `name` is the name the
/// certificate was checked against.
fn classify(e: &std::io::Error, name: &str) -> Option<(TlsProblem, String)> {
    let inner = e.get_ref()?.downcast_ref::<TlsError>()?;
    let found = match inner {
        TlsError::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => (
                TlsProblem::UnknownIssuer,
                "the router's certificate is not signed by the CA in MIKROTIK_API_TLS_CA_FILE (unknown issuer)".to_owned(),
            ),
            CertificateError::BadSignature => (
                TlsProblem::UnknownIssuer,
                "the router's certificate is not signed by the CA in MIKROTIK_API_TLS_CA_FILE (a CA of the same name, but another key)".to_owned(),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                TlsProblem::NameMismatch,
                format!("the router's certificate does not name {name:?} (the host of MIKROTIK_API_ADDRESS, or MIKROTIK_API_TLS_SERVER_NAME when set); set MIKROTIK_API_TLS_SERVER_NAME to a name the certificate carries, or pin the certificate with MIKROTIK_API_TLS_FINGERPRINT"),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                TlsProblem::Expired,
                "the router's certificate has expired".to_owned(),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                TlsProblem::Expired,
                "the router's certificate is not valid yet (check the clocks of the router and of this host)".to_owned(),
            ),
            CertificateError::Other(o) if o.0.downcast_ref::<FingerprintMismatch>().is_some() => {
                (TlsProblem::FingerprintMismatch, o.0.to_string())
            }
            other => (
                TlsProblem::BadCertificate,
                format!("the router's certificate is not accepted: {other}"),
            ),
        },
        other => (TlsProblem::Handshake, other.to_string()),
    };
    Some(found)
}

/// The leaf's fingerprint did not match the pinned one.
#[derive(Debug, Error)]
#[error(
    "the router's certificate fingerprint {got} does not match MIKROTIK_API_TLS_FINGERPRINT {want}"
)]
struct FingerprintMismatch {
    got: String,
    want: String,
}

/// Checks the chain (if a CA is given) and the leaf fingerprint (if pinned); always checks
/// the handshake signatures.
#[derive(Debug)]
struct PinnedVerifier {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    fingerprint: Option<[u8; 32]>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if let Some(want) = &self.fingerprint {
            let got = fingerprint_of(end_entity.as_ref());
            if &got != want {
                return Err(TlsError::InvalidCertificate(CertificateError::Other(
                    tokio_rustls::rustls::OtherError(Arc::new(FingerprintMismatch {
                        got: hex_colons(&got),
                        want: hex_colons(want),
                    })),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_address_forms() {
        assert_eq!(host_of("192.168.88.1:8729"), "192.168.88.1");
        assert_eq!(host_of("router.lan:8729"), "router.lan");
        assert_eq!(host_of("[fd00::1]:8729"), "fd00::1");
        assert_eq!(host_of("router.lan"), "router.lan");
    }

    #[test]
    fn verify_without_ca_or_fingerprint_is_refused_with_advice() {
        let mode = TlsMode::Verify {
            ca_file: None,
            fingerprint_sha256: None,
            server_name: None,
        };
        let err = TlsClient::new(&mode, "127.0.0.1:8729").err().unwrap();
        assert!(
            matches!(
                err,
                RouterError::Tls {
                    kind: TlsProblem::Settings,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("MIKROTIK_API_TLS_CA_FILE"),
            "{err}"
        );
    }

    #[test]
    fn missing_ca_file_is_reported_by_path() {
        let mode = TlsMode::Verify {
            ca_file: Some("/nonexistent/ca.pem".into()),
            fingerprint_sha256: None,
            server_name: None,
        };
        let err = TlsClient::new(&mode, "127.0.0.1:8729").err().unwrap();
        assert!(
            matches!(
                err,
                RouterError::Tls {
                    kind: TlsProblem::BadCaFile,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
