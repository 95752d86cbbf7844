//! One exchange as a KMIP client makes it: a request written, its response read with the same
//! framing and bounds as the server's (`read_body`). For the tests and the bench that play a
//! tape library against a listener; the requests themselves are built with `kmip::client`.

use std::time::Duration;

use kmip::ttlv::HEADER_LEN;
use kmip::{DecodeError, Item, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
