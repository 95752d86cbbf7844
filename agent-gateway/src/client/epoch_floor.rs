//! A drive refuses a KMA of an older cluster epoch than one it has already seen (SPEC B7).
//! After a recovery from a lost majority, the lost KMAs still hold certificates of the old
//! epoch and could elect a leader of their own if they came back unfenced: a drive that has
//! spoken to the recovered cluster (or was enrolled by it) will not take keys from them.
//!
//! The floor starts at the epoch of the drive's own certificate and rises with every KMA
//! certificate of a newer epoch the drive verifies; it lives as long as the client. The check
//! runs after the usual chain check, inside the TLS handshake, so a refused KMA is never sent a
//! request.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The chain check of the cluster's CA, then the epoch check.
#[derive(Debug)]
pub(crate) struct NewestEpochOnly {
    chain: Arc<WebPkiServerVerifier>,
    floor: Arc<AtomicU32>,
}

impl NewestEpochOnly {
    pub(crate) fn new(chain: Arc<WebPkiServerVerifier>, floor: Arc<AtomicU32>) -> Self {
        NewestEpochOnly { chain, floor }
    }
}

/// Why a KMA of `epoch` is refused by a drive that saw `floor`.
pub(crate) fn older_epoch(epoch: u32, floor: u32) -> String {
    format!(
        "this KMA's certificate is of cluster epoch {epoch}, older than epoch {floor} this drive \
         has already seen: it was left behind by a recovery or a restore (SPEC B7); fence it and \
         point the drive at the recovered cluster's KMAs"
    )
}

impl ServerCertVerifier for NewestEpochOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let Some(epoch) = crate::epoch::of_certificate(end_entity) else {
            return Err(rustls::Error::General(
                "the KMA's certificate names a cluster epoch this drive cannot read".into(),
            ));
        };
        let floor = self.floor.fetch_max(epoch, Ordering::AcqRel);
        if epoch < floor {
            return Err(rustls::Error::General(older_epoch(epoch, floor)));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    /// A CA and a server certificate for 127.0.0.1 it signed, of cluster epoch `epoch`.
    struct Issuer {
        ca: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    impl Issuer {
        fn new() -> Issuer {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = params.self_signed(&key).expect("CA");
            Issuer { ca, key }
        }

        fn server(&self, epoch: u32) -> Arc<rustls::ServerConfig> {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params =
                rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
            params.distinguished_name.push(rcgen::DnType::CommonName, "kma-1");
            let unit = crate::epoch::unit_of(epoch);
            params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, unit);
            let cert = params.signed_by(&key, &self.ca, &self.key).expect("signed");
            let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
            let config = rustls::ServerConfig::builder_with_provider(super::super::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3")
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], key)
                .expect("server config");
            Arc::new(config)
        }
    }

    /// One handshake on loopback: the client's error, if it refused.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: rustls::ClientConfig,
    ) -> Result<(), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("port");
        let address = listener.local_addr().expect("bound");
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accepted");
            let _ = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await;
        });
        let tcp = tokio::net::TcpStream::connect(address).await.expect("connected");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let outcome = connector.connect(name, tcp).await.map(drop).map_err(|e| e.to_string());
        let _ = accept.await;
        outcome
    }

    /// Setup: a client of the agent library trusting the cluster CA, its epoch floor at 0.
    /// Action: handshakes with KMAs of epochs 0, 1, then 0 again, then 2. Expect: 0 and 1
    /// pass and the floor rises to 1; the KMA of epoch 0 is then refused with the reason; 2
    /// passes. A client whose floor starts at 2 refuses epoch 1 from the first handshake.
    /// (SPEC B7)
    #[tokio::test]
    async fn b7_a_drive_refuses_a_kma_of_an_older_epoch_than_it_saw() {
        let issuer = Issuer::new();
        let floor = Arc::new(AtomicU32::new(0));
        let client = super::super::tls_config(&issuer.ca.pem(), None, floor.clone()).expect("tls");
        handshake(issuer.server(0), client.clone()).await.expect("epoch 0 at first");
        handshake(issuer.server(1), client.clone()).await.expect("epoch 1");
        assert_eq!(floor.load(std::sync::atomic::Ordering::Acquire), 1);
        let refused = handshake(issuer.server(0), client.clone()).await.expect_err("refused");
        assert!(refused.contains("cluster epoch 0, older than epoch 1"), "{refused}");
        handshake(issuer.server(2), client).await.expect("epoch 2");

        let kept = Arc::new(AtomicU32::new(2));
        let restarted = super::super::tls_config(&issuer.ca.pem(), None, kept).expect("tls");
        let refused = handshake(issuer.server(1), restarted).await.expect_err("refused");
        assert!(refused.contains("cluster epoch 1, older than epoch 2"), "{refused}");
    }
}
