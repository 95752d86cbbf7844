//! What a KMA presents and trusts on its TLS sessions, replaceable while it runs (issue #16
//! point 1, CA rotation): during a rotation the listeners and links trust the old and the new
//! CA; once it completes they present the KMA's new certificate and trust the new CA alone.
//!
//! rustls reads a config's certificate and verifiers at each handshake through the traits below,
//! so one [`LiveTls`] behind every config the KMA builds (both listeners, Raft links, requests to
//! other KMAs) changes them all at once; sessions already open keep what they were opened with.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig};
use rustls::{RootCertStore, SignatureScheme};

use super::tls::{certs_from_pem, TlsError};

/// One set of what is presented and trusted.
#[derive(Debug)]
struct Material {
    certified: Arc<CertifiedKey>,
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
    /// The fingerprints of the CA certificates trusted.
    trusted: Vec<[u8; 32]>,
    /// The fingerprint of the certificate presented.
    presented: Option<[u8; 32]>,
    /// The cluster epoch of the certificate presented (SPEC B7): KMAs of an older one are
    /// refused as servers, and certificates issued here name it.
    presented_epoch: u32,
    /// The CA certificates trusted, as PEM: what a client of this KMA should trust.
    trusted_pem: String,
}

/// The KMA's certificate and trusted CAs, shared by every TLS config it builds.
#[derive(Debug)]
pub struct LiveTls {
    current: RwLock<Arc<Material>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &'static str) -> impl Fn(String) -> TlsError {
    move |detail| TlsError::Config { what, detail }
}

impl Material {
    fn new(trusted_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Material, TlsError> {
        let mut roots = RootCertStore::empty();
        let mut trusted = Vec::new();
        for cert in certs_from_pem(trusted_pem) {
            trusted.push(crate::pki::der_fingerprint(&cert));
            roots.add(cert).map_err(|e| config_error("cluster CA")(e.to_string()))?;
        }
        if trusted.is_empty() {
            return Err(config_error("cluster CA")("no CA certificate to trust".into()));
        }
        let roots = Arc::new(roots);
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            // Only the join endpoint serves clients without a certificate (see `tls`).
            .allow_unauthenticated()
            .build()
            .map_err(|e| config_error("client verifier")(e.to_string()))?;
        let servers = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| config_error("server verifier")(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(key_pem.as_bytes()))
            .ok()
            .flatten()
            .ok_or_else(|| config_error("private key")("no PEM key".into()))?;
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| config_error("private key")(e.to_string()))?;
        let chain = certs_from_pem(cert_pem);
        let presented = chain.first().map(crate::pki::der_fingerprint);
        let presented_epoch =
            chain.first().and_then(agent_gateway::epoch::of_certificate).unwrap_or(0);
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        let trusted_pem = trusted_pem.to_string();
        Ok(Material {
            certified,
            clients,
            servers,
            trusted,
            presented,
            presented_epoch,
            trusted_pem,
        })
    }
}

impl LiveTls {
    /// Trusts the CA certificates of `trusted_pem` (one or more) and presents `cert_pem` with
    /// its key.
    pub fn new(trusted_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<LiveTls>, TlsError> {
        let material = Material::new(trusted_pem, cert_pem, key_pem)?;
        Ok(Arc::new(LiveTls { current: RwLock::new(Arc::new(material)) }))
    }

    /// From now on, new sessions trust `trusted_pem` and present `cert_pem`; nothing changes if
    /// any of them is unusable.
    pub fn replace(
        &self,
        trusted_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(), TlsError> {
        let material = Material::new(trusted_pem, cert_pem, key_pem)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(material);
        Ok(())
    }

    /// The fingerprints of the CA certificates trusted now.
    pub fn trusted(&self) -> Vec<[u8; 32]> {
        self.material().trusted.clone()
    }

    /// The CA certificates trusted now, as PEM: handed to clients at login, so that one who
    /// logs in while a CA rotation runs trusts the new CA before the KMAs present it.
    pub fn trusted_pem(&self) -> String {
        self.material().trusted_pem.clone()
    }

    /// The fingerprint of the certificate presented now.
    pub fn presented(&self) -> Option<[u8; 32]> {
        self.material().presented
    }

    /// The cluster epoch of the certificate presented now.
    pub fn presented_epoch(&self) -> u32 {
        self.material().presented_epoch
    }

    fn material(&self) -> Arc<Material> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A listener's config (TLS 1.3 only), offering `protocols` in ALPN.
    pub fn server_config(
        self: &Arc<Self>,
        protocols: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let live = Live(self.clone(), Port::Tls13Only);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error("TLS 1.3")(e.to_string()))?
            .with_client_cert_verifier(Arc::new(live.clone()))
            .with_cert_resolver(Arc::new(live));
        config.alpn_protocols = protocols.iter().map(|protocol| protocol.to_vec()).collect();
        // No resumption: a resumed session keeps the identity of the handshake it resumes,
        // which would outlive a certificate replaced, or a CA retired, since.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// The KMIP listener's config (issue 19): TLS 1.3, and TLS 1.2 because KMIP 1.x profiles
    /// require it and many tape libraries speak nothing newer: a stated exception to S2
    /// (docs/kmip.md), limited to ECDHE key exchange with AES-GCM. The client certificate is
    /// verified as on the other listeners; one that is not a current agent's is refused
    /// per request by the listener.
    pub fn kmip_server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        use rustls::crypto::ring::cipher_suite as suite;
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ];
        let live = Live(self.clone(), Port::Kmip);
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| config_error("TLS 1.2 and 1.3")(e.to_string()))?
            .with_client_cert_verifier(Arc::new(live.clone()))
            .with_cert_resolver(Arc::new(live));
        // No resumption, as on the other listeners (see `server_config`).
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// A client config (TLS 1.3 only) that presents the KMA's certificate.
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, TlsError> {
        let live = Live(self.clone(), Port::Tls13Only);
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error("TLS 1.3")(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(live.clone()))
            .with_client_cert_resolver(Arc::new(live));
        // Each session presents the certificate current at its handshake (see above).
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }
}

/// The rustls side of [`LiveTls`]: each call reads the material current at that moment.
#[derive(Clone, Debug)]
struct Live(Arc<LiveTls>, Port);

/// Which listener a verifier serves: the KMIP port is the one that takes TLS 1.2 (its
/// handshake signatures are verified, not refused) and whose clients must present a
/// certificate (docs/kmip.md); every other connection is TLS 1.3 only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    Tls13Only,
    Kmip,
}

impl ClientCertVerifier for Live {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A KMIP client always presents its certificate; elsewhere enrollment, logins and
        // joins come without one.
        self.1 == Port::Kmip
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Optional in TLS 1.3; our clients present their one certificate whatever the hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.material().clients.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.1 {
            Port::Kmip => self.0.material().clients.verify_tls12_signature(message, cert, dss),
            Port::Tls13Only => super::tls::tls12_refused(),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        super::tls::tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self.1 {
            Port::Kmip => self.0.material().clients.supported_verify_schemes(),
            Port::Tls13Only => super::tls::verify_schemes(),
        }
    }
}

impl ServerCertVerifier for Live {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let material = self.0.material();
        let verified = material.servers.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )?;
        // A KMA left behind by a recovery still holds a certificate of the older epoch.
        let epoch = agent_gateway::epoch::of_certificate(end_entity).ok_or_else(|| {
            rustls::Error::General("the KMA's certificate names an unreadable cluster epoch".into())
        })?;
        if epoch < material.presented_epoch {
            return Err(rustls::Error::General(super::tls::older_epoch(
                epoch,
                material.presented_epoch,
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        super::tls::tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        super::tls::tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        super::tls::verify_schemes()
    }
}

impl ResolvesServerCert for Live {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().certified.clone())
    }
}

impl ResolvesClientCert for Live {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertificateAuthority, Identity};

    /// A server and a client on loopback with the given configs: whether the handshake passes.
    async fn handshake(server: Arc<ServerConfig>, client: ClientConfig) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("port");
        let address = listener.local_addr().expect("bound");
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accepted");
            tokio_rustls::TlsAcceptor::from(server).accept(tcp).await.is_ok()
        });
        let tcp = tokio::net::TcpStream::connect(address).await.expect("connected");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let client_ok = connector.connect(name, tcp).await.is_ok();
        // TLS 1.3: the server refuses a client certificate after the client's side is done.
        let server_ok = accept.await.expect("joined");
        client_ok && server_ok
    }

    /// Material that trusts `trusted_pem` and presents a certificate of `ca` for `node_id`.
    fn kma(trusted_pem: &str, ca: &CertificateAuthority, node_id: u64) -> Arc<LiveTls> {
        let hosts = ["127.0.0.1".to_string()];
        let (cert, key) = ca.issue(&Identity::Kma(node_id), &hosts).expect("issued");
        LiveTls::new(trusted_pem, &cert, &key).expect("material")
    }

    /// Setup: a server KMA of CA A; two clients that trust A and B, one presenting a
    /// certificate of A, one of B. Action: the server's material is replaced (trust A and B;
    /// then B alone with a certificate of B) while its config stays the same object. Expect:
    /// each new session follows the material of its handshake: B's client is refused while
    /// only A is trusted, both pass while both are, A's client is refused once only B is.
    /// (issue #16 point 1)
    #[tokio::test]
    async fn s2_new_sessions_follow_the_replaced_material_without_a_new_config() {
        let old = CertificateAuthority::create(1).expect("CA A");
        let new = CertificateAuthority::create(1).expect("CA B");
        let both = format!("{}{}", old.cert_pem, new.cert_pem);
        let server = kma(&old.cert_pem, &old, 1);
        let config = server.server_config(&[]).expect("server config");
        let old_client = kma(&both, &old, 2).client_config().expect("client of A");
        let new_client = kma(&both, &new, 2).client_config().expect("client of B");
        assert!(handshake(config.clone(), old_client.clone()).await);
        assert!(!handshake(config.clone(), new_client.clone()).await, "B not trusted yet");

        let hosts = ["127.0.0.1".to_string()];
        let (old_cert, old_key) = old.issue(&Identity::Kma(1), &hosts).expect("issued");
        server.replace(&both, &old_cert, &old_key).expect("both CAs");
        assert_eq!(server.trusted().len(), 2);
        assert!(handshake(config.clone(), old_client.clone()).await);
        assert!(handshake(config.clone(), new_client.clone()).await);

        let (new_cert, new_key) = new.issue(&Identity::Kma(1), &hosts).expect("issued");
        server.replace(&new.cert_pem, &new_cert, &new_key).expect("B alone");
        assert!(handshake(config.clone(), new_client).await);
        assert!(!handshake(config, old_client).await, "A refused once the rotation is over");
    }

    /// Setup: one CA; KMAs with certificates of cluster epoch 0 (a KMA a recovery left behind)
    /// and epoch 1 (the survivor, a KMA that joined it). Action: handshakes between them.
    /// Expect: a KMA of epoch 1 refuses a server of epoch 0 and accepts one of epoch 1; the
    /// certificates name their epoch. (SPEC B7)
    #[tokio::test]
    async fn b7_a_kma_refuses_a_kma_of_an_older_epoch() {
        let ca = CertificateAuthority::create(1).expect("CA");
        let in_epoch = |epoch| {
            let origin = std::path::Path::new("test");
            CertificateAuthority::from_pem(ca.cert_pem.clone(), &ca.key_pem(), origin)
                .expect("CA")
                .in_epoch(epoch)
        };
        let lost = kma(&ca.cert_pem, &in_epoch(0), 1);
        let survivor = kma(&ca.cert_pem, &in_epoch(1), 3);
        let joined = kma(&ca.cert_pem, &in_epoch(1), 4).client_config().expect("client");
        assert_eq!((lost.presented_epoch(), survivor.presented_epoch()), (0, 1));
        let lost_server = lost.server_config(&[]).expect("server config");
        assert!(!handshake(lost_server.clone(), joined.clone()).await, "epoch 0 refused");
        let survivor_server = survivor.server_config(&[]).expect("server config");
        assert!(handshake(survivor_server, joined).await, "epoch 1 accepted");
        let old_client = lost.client_config().expect("client");
        assert!(handshake(lost_server, old_client).await, "the lost KMAs know no newer epoch");
    }
}
