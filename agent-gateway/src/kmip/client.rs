//! A KMIP client's side of a connection: TLS 1.3 with an agent's certificate, trusting the
//! cluster CA as the agent client library does, and one exchange (a request written, its
//! response read with the server's own framing and bounds, `read_body`). For the tests and the
//! bench that play a tape library against a listener; requests are built with `kmip::client`.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use kmip::ttlv::HEADER_LEN;
use kmip::{DecodeError, Item, Limits};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::read_body;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("the KMIP server closed the connection (a framing error on its side, or idle)")]
    Closed,
    #[error("the KMIP connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the KMIP response could not be read: {0}")]
    Framing(String),
    #[error("the KMIP response is not TTLV: {0}")]
    Decode(#[from] DecodeError),
    #[error("the KMIP client cannot be set up: {0}")]
    Setup(String),
}

/// Connects to the KMIP listener at `address` (host:port) with the agent certificate and key
/// of `identity` (PEM), over TLS 1.3, trusting only the cluster CA of `ca_pem`.
pub async fn connect(
    address: &str,
    ca_pem: &str,
    identity: (&str, &str),
) -> Result<TlsStream<TcpStream>, ExchangeError> {
    let floor = Arc::new(AtomicU32::new(0));
    let mut tls = crate::client::tls_config(ca_pem, Some(identity), floor)
        .map_err(|error| ExchangeError::Setup(error.to_string()))?;
    // KMIP names no ALPN protocol; the agent library's config offers HTTP's.
    tls.alpn_protocols.clear();
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|error| ExchangeError::Setup(format!("server name {host}: {error}")))?;
    let tcp = TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await?)
}

/// Writes `request` (encoded; a test may send bytes that are not TTLV) and reads one response,
/// whose body must arrive within `timeout` of its header.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    timeout: Duration,
) -> Result<Item, ExchangeError> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut header = [0u8; HEADER_LEN];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ExchangeError::Closed)
        }
        Err(error) => return Err(error.into()),
    }
    let body = read_body(stream, &header, timeout).await.map_err(ExchangeError::Framing)?;
    Ok(kmip::decode(&body, &Limits::SERVER)?)
}
