//! Outbound TLS: what the proxy trusts when it connects to the upstream
//! provider, the MCP server and Redis (`rediss://`).
//!
//! - One set of roots for every outbound connection: Mozilla's (the
//!   `webpki-roots` list) plus the operator's `OAUTH_PROXY_EXTRA_CA_FILE`,
//!   added to them, never replacing them, so a private CA for Redis does not
//!   cost the public upstream its roots.
//! - Built once at start-up ([`OutboundTls::new`], from `Config`): one
//!   `rustls::ClientConfig` for the awc clients, and the same roots as PEM for
//!   the Redis client, which takes its roots that way.
//! - awc clients are built per worker thread (they are not `Send`), so the
//!   set-up travels the same way: the proxy marks each thread it runs on
//!   ([`use_on_this_thread`]: `OAuthProxy::start` and `configure_routes`), and
//!   the thread's clients read it with [`client_config`]. A thread no proxy
//!   marked gets Mozilla's roots alone.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The trusted roots of every outbound connection, and the client
/// configuration built from them. Cheap to clone.
#[derive(Clone)]
pub struct OutboundTls {
    client: Arc<ClientConfig>,
    /// Every root as PEM, for the Redis client.
    roots_pem: Arc<Vec<u8>>,
    roots: usize,
    extra_roots: usize,
}

impl fmt::Debug for OutboundTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundTls")
            .field("roots", &self.roots)
            .field("extra_roots", &self.extra_roots)
            .finish()
    }
}

/// Mozilla's roots, parsed once per process: the store and their PEM.
fn mozilla_roots() -> &'static (RootCertStore, String) {
    static ROOTS: OnceLock<(RootCertStore, String)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let mut pem = String::new();
        for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            // Only roots rustls takes go into the PEM: the Redis client
            // refuses a bundle with one it cannot use.
            if store.add(cert.clone()).is_ok() {
                push_pem(&mut pem, cert);
            }
        }
        (store, pem)
    })
}

fn push_pem(pem: &mut String, cert: &CertificateDer<'_>) {
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    let encoded = STANDARD.encode(cert.as_ref());
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
}

impl OutboundTls {
    /// Mozilla's roots plus the certificates of `extra_pem` (a PEM bundle).
    /// The error says what is wrong with the bundle.
    pub fn new(extra_pem: Option<&[u8]>) -> Result<OutboundTls, String> {
        let (mozilla, mozilla_pem) = mozilla_roots();
        let mut store = mozilla.clone();
        let mut pem = mozilla_pem.clone();
        let mut extra_roots = 0;
        if let Some(bundle) = extra_pem {
            for (number, cert) in CertificateDer::pem_slice_iter(bundle).enumerate() {
                let cert = cert.map_err(|e| format!("is not a PEM bundle of CA certificates ({e})"))?;
                store.add(cert.clone()).map_err(|e| {
                    format!(
                        "certificate {} cannot be a trusted root ({e}); the file must hold CA certificates in PEM",
                        number + 1
                    )
                })?;
                push_pem(&mut pem, &cert);
                extra_roots += 1;
            }
            if extra_roots == 0 {
                return Err("holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`)".into());
            }
        }
        let roots = store.len();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("no TLS client can be set up: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
        // As awc's own connector: HTTP/2 where the server offers it.
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(OutboundTls {
            client: Arc::new(client),
            roots_pem: Arc::new(pem.into_bytes()),
            roots,
            extra_roots,
        })
    }

    /// The client configuration for awc (`Connector::rustls_0_23`).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// Every trusted root as one PEM bundle (the Redis client's form).
    pub fn roots_pem(&self) -> &[u8] {
        &self.roots_pem
    }

    /// How many roots are trusted in all.
    pub fn roots(&self) -> usize {
        self.roots
    }

    /// How many roots came from `OAUTH_PROXY_EXTRA_CA_FILE`.
    pub fn extra_roots(&self) -> usize {
        self.extra_roots
    }
}

impl Default for OutboundTls {
    /// Mozilla's roots alone.
    fn default() -> Self {
        static DEFAULT: OnceLock<OutboundTls> = OnceLock::new();
        DEFAULT
            .get_or_init(|| OutboundTls::new(None).expect("Mozilla's roots make a TLS client configuration"))
            .clone()
    }
}

thread_local! {
    static THIS_THREAD: RefCell<Option<Arc<ClientConfig>>> = const { RefCell::new(None) };
}

/// Makes `tls` the outbound TLS set-up of the calling thread's awc clients.
pub fn use_on_this_thread(tls: &OutboundTls) {
    THIS_THREAD.with(|slot| *slot.borrow_mut() = Some(tls.client_config()));
}

/// The calling thread's client configuration (see the module docs).
pub fn client_config() -> Arc<ClientConfig> {
    THIS_THREAD
        .with(|slot| slot.borrow().clone())
        .unwrap_or_else(|| OutboundTls::default().client_config())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mcp-oauth-proxy unit test CA");
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn extra_roots_are_added_to_mozillas_not_put_in_their_place() {
        let base = OutboundTls::new(None).unwrap();
        assert!(base.roots() > 100, "Mozilla's roots: {}", base.roots());
        assert_eq!(base.extra_roots(), 0);
        let bundle = format!("{}{}", test_ca_pem(), test_ca_pem());
        let tls = OutboundTls::new(Some(bundle.as_bytes())).unwrap();
        assert_eq!(tls.extra_roots(), 2);
        assert_eq!(tls.roots(), base.roots() + 2);
        // The Redis form holds them all too, each block whole.
        let pem = String::from_utf8(tls.roots_pem().to_vec()).unwrap();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), tls.roots());
        let parsed = CertificateDer::pem_slice_iter(tls.roots_pem()).count();
        assert_eq!(parsed, tls.roots());
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        assert!(OutboundTls::new(Some(b""))
            .unwrap_err()
            .contains("holds no certificate"));
        assert!(OutboundTls::new(Some(b"not a pem at all\n"))
            .unwrap_err()
            .contains("holds no certificate"));
        let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(OutboundTls::new(Some(key_only.as_bytes()))
            .unwrap_err()
            .contains("holds no certificate"));
    }

    #[test]
    fn a_certificate_that_does_not_parse_is_refused() {
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = OutboundTls::new(Some(garbage.as_bytes())).unwrap_err();
        assert!(err.contains("certificate 1 cannot be a trusted root"), "{err}");
    }

    #[test]
    fn a_thread_uses_the_set_up_it_was_given() {
        let tls = OutboundTls::new(Some(test_ca_pem().as_bytes())).unwrap();
        std::thread::spawn(move || {
            assert!(!Arc::ptr_eq(&client_config(), &tls.client_config()));
            use_on_this_thread(&tls);
            assert!(Arc::ptr_eq(&client_config(), &tls.client_config()));
        })
        .join()
        .unwrap();
    }
}
