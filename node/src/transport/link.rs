//! Raft links: the RPCs between KMAs on long-lived mutual-TLS streams of length-prefixed
//! postcard frames, one call and its answer at a time.
//!
//! A link shares the management listener's port and TLS: the client asks for [`ALPN`] in the
//! handshake, and the listener hands such connections here instead of to HTTP. Nothing but
//! the framing is new: the certificate checks are the listener's, the bodies are openraft's
//! own types. HTTP/2 cost a task hop or two and a stream's bookkeeping on both ends of every
//! call; openraft's replication task sends one call at a time per follower anyway, so the task
//! that calls also writes the frame and reads the answer.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of postcard: a [`RaftCall`]
//! from the client, an [`Answer`] from the server.

use std::sync::Arc;
use std::time::Duration;

use openraft::raft::VoteRequest;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest};
use raft_storage::KmaRaft;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::pki::Identity;
use crate::transport::wire::{ProposeRequest, ProposeResponse};
use crate::transport::LeaderContact;

/// The ALPN protocol name of a Raft link.
pub const ALPN: &[u8] = b"kma-raft/1";

/// The largest frame either end accepts: a snapshot chunk or a full AppendEntries (512 entries
/// of batched commands) fit many times over; a length beyond it is a broken or hostile peer.
pub const FRAME_LEN_MAX: usize = 64 << 20;

/// A server closes a link that carried no call for this long (a live leader sends a heartbeat
/// every few hundred milliseconds; a client whose link was closed just opens a new one).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// One call from a KMA to a peer. New variants go last: an older peer refuses what it cannot
/// decode, and the caller can tell (see [`crate::transport::forward_links`]).
#[derive(Serialize, Deserialize)]
pub enum RaftCall {
    Append(AppendEntriesRequest<KmaRaft>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<KmaRaft>),
    /// A proposal a follower forwards to the leader on behalf of the client it authenticated
    /// (what `POST /v1/propose` carries).
    Propose(ProposeRequest),
}

/// The peer's answer: openraft's result for the call, or why the call was not run.
#[derive(Serialize, Deserialize)]
pub enum Answer<T> {
    Done(T),
    Refused(String),
}

/// Why an exchange on a link failed.
#[derive(Debug)]
pub enum LinkError {
    /// No connection or handshake within the time.
    Connect(String),
    /// The connection broke, or an answer was cut off or too long.
    Io(std::io::Error),
    /// The server did not choose this protocol (a KMA of an older version).
    Protocol,
}

/// The client end of a link to one peer, as one of openraft's network clients holds it.
pub struct Link {
    stream: TlsStream<TcpStream>,
}

impl Link {
    /// Connects to `address` (host:port of the peer's management listener) and checks that the
    /// peer speaks this protocol. `tls` must offer [`ALPN`] (see [`client_config`]).
    pub async fn connect(tls: Arc<rustls::ClientConfig>, address: &str) -> Result<Link, LinkError> {
        let name = crate::transport::tls::server_name(address).map_err(LinkError::Connect)?;
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| LinkError::Connect(format!("{address}: {e}")))?;
        // An AppendEntries must not wait for the acknowledgement of the one before it.
        let _ = tcp.set_nodelay(true);
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| LinkError::Connect(format!("{address}: TLS: {e}")))?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(LinkError::Protocol);
        }
        Ok(Link { stream })
    }

    /// False once the peer closed or reset the link, or sent something unasked (a TLS alert
    /// before closing): such a link must not carry a call. Does not wait.
    pub fn is_open(&self) -> bool {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut byte = [0u8; 1];
        let mut buffer = tokio::io::ReadBuf::new(&mut byte);
        // Nothing to read is the one healthy state of an idle link.
        self.stream.get_ref().0.poll_peek(&mut context, &mut buffer).is_pending()
    }

    /// Sends `call` and reads the answer.
    pub async fn exchange<T: DeserializeOwned>(
        &mut self,
        call: &RaftCall,
    ) -> Result<Result<Answer<T>, postcard::Error>, LinkError> {
        let frame = encode(call).map_err(|e| LinkError::Io(std::io::Error::other(e)))?;
        self.stream.write_all(&frame).await.map_err(LinkError::Io)?;
        self.stream.flush().await.map_err(LinkError::Io)?;
        let body = read_frame(&mut self.stream).await.map_err(LinkError::Io)?;
        let body = body.ok_or_else(|| {
            LinkError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "link closed"))
        })?;
        Ok(postcard::from_bytes(&body))
    }
}

/// The KMA's client TLS config, offering only [`ALPN`].
pub fn client_config(mut tls: rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(tls)
}

/// A frame: the length, then `value` in postcard.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut frame = postcard::to_extend(value, vec![0u8; 4])?;
    let len = frame.len() - 4;
    // FRAME_LEN_MAX < u32::MAX: anything that does not fit is refused by the reader anyway.
    let prefix = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    frame[..4].copy_from_slice(&prefix);
    Ok(frame)
}

/// Reads one frame's body; `None` when the other end closed the link between frames.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > FRAME_LEN_MAX {
        let why = format!("frame of {len} bytes, more than {FRAME_LEN_MAX}");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

async fn write_answer<S, T>(stream: &mut S, answer: &Answer<T>) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
    T: Serialize,
{
    let frame = encode(answer).map_err(std::io::Error::other)?;
    stream.write_all(&frame).await?;
    stream.flush().await
}

/// A proposal another KMA forwarded on a link, on its way up to the write path (which checks
/// that the caller is a member and may speak for the actor it names).
pub struct InboundProposal {
    /// The node ID in the calling KMA's certificate.
    pub from_node: u64,
    pub request: ProposeRequest,
    pub reply: tokio::sync::oneshot::Sender<ProposeResponse>,
}

/// Proposals waiting for the write path: past this, a link waits (its caller's timeout runs).
pub const INBOUND_PROPOSALS_MAX: usize = 1024;

/// What the link server needs: the Raft instance to run calls on, the contact clock of the
/// election watchdog, and the way up for forwarded proposals.
#[derive(Clone)]
pub struct LinkServer {
    pub raft: openraft::Raft<KmaRaft>,
    pub contact: LeaderContact,
    pub inbound: tokio::sync::mpsc::Sender<InboundProposal>,
}

impl LinkServer {
    /// Serves one link until the client closes it, goes idle, or breaks the framing. Only a KMA
    /// certificate of this cluster may call (the handshake already refused other CAs).
    pub async fn serve(&self, (mut stream, remote): agent_gateway::server::HandedOff) {
        let certificate = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
        let caller = match certificate.and_then(crate::transport::tls::identity_of) {
            Some(Identity::Kma(node_id)) => Some(node_id),
            _ => None,
        };
        loop {
            let body = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream)).await {
                Ok(Ok(Some(body))) => body,
                Ok(Ok(None)) | Err(_) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "raft link ended");
                    return;
                }
            };
            let written = if let Some(caller) = caller {
                match postcard::from_bytes::<RaftCall>(&body) {
                    Ok(call) => self.run(caller, call, &mut stream).await,
                    Err(e) => {
                        write_answer(&mut stream, &refused(format!("malformed call: {e}"))).await
                    }
                }
            } else {
                let why = "Raft traffic needs a KMA certificate: present a certificate from this \
                           cluster's CA";
                let _ = write_answer(&mut stream, &refused(why.into())).await;
                return;
            };
            if let Err(error) = written {
                tracing::debug!(%remote, %error, "raft link ended");
                return;
            }
        }
    }

    /// Runs one call from the KMA `caller` on this KMA and writes the answer.
    async fn run<S: AsyncWrite + Unpin>(
        &self,
        caller: u64,
        call: RaftCall,
        stream: &mut S,
    ) -> std::io::Result<()> {
        match call {
            RaftCall::Append(request) => {
                let answer = self.raft.append_entries(request).await;
                if matches!(&answer, Ok(response) if !matches!(response, AppendEntriesResponse::HigherVote(_)))
                {
                    self.contact.touch();
                }
                write_answer(stream, &Answer::Done(answer)).await
            }
            RaftCall::Vote(request) => {
                let answer = self.raft.vote(request).await;
                if matches!(&answer, Ok(response) if response.vote_granted) {
                    self.contact.touch();
                }
                write_answer(stream, &Answer::Done(answer)).await
            }
            RaftCall::Snapshot(request) => {
                let answer = self.raft.install_snapshot(request).await;
                write_answer(stream, &Answer::Done(answer)).await
            }
            RaftCall::Propose(request) => {
                let answer = self.propose_upward(caller, request).await;
                write_answer(stream, &Answer::Done(answer)).await
            }
        }
    }

    /// Hands a forwarded proposal to the write path and waits for its outcome.
    async fn propose_upward(&self, from_node: u64, request: ProposeRequest) -> ProposeResponse {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let inbound = InboundProposal { from_node, request, reply };
        if self.inbound.send(inbound).await.is_err() {
            return Err(crate::transport::wire::ProposeError::ShuttingDown);
        }
        answer.await.unwrap_or(Err(crate::transport::wire::ProposeError::ShuttingDown))
    }

    /// Serves Raft links on the management listener (see [`agent_gateway::server::Handoff`]).
    pub fn handoff(self) -> agent_gateway::server::Handoff {
        let server = Arc::new(self);
        agent_gateway::server::Handoff {
            protocol: ALPN,
            serve: Arc::new(move |handed: agent_gateway::server::HandedOff| {
                let server = server.clone();
                Box::pin(async move { server.serve(handed).await })
            }),
        }
    }
}

fn refused(why: String) -> Answer<()> {
    Answer::Refused(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setup: a frame written to a pipe. Action: read it back; then a length beyond the bound;
    /// then a close between frames. Expect: the same bytes, an InvalidData error without
    /// allocating the claimed length, and `None`. (SPEC S2)
    #[tokio::test]
    async fn s2_frames_round_trip_and_lengths_are_bounded() {
        let (mut writer, mut reader) = tokio::io::duplex(1024);
        write_answer(&mut writer, &Answer::Done(42u64)).await.unwrap();
        let body = read_frame(&mut reader).await.unwrap().unwrap();
        assert!(matches!(postcard::from_bytes::<Answer<u64>>(&body).unwrap(), Answer::Done(42)));

        let too_long = u32::try_from(FRAME_LEN_MAX + 1).unwrap().to_be_bytes();
        writer.write_all(&too_long).await.unwrap();
        let error = read_frame(&mut reader).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);

        let (writer, mut reader) = tokio::io::duplex(1024);
        drop(writer);
        assert!(read_frame(&mut reader).await.unwrap().is_none());
    }

    /// Setup: a refusal encoded without knowing the call. Action: decode it as the answer an
    /// AppendEntries expects. Expect: the refusal and its text (the server can refuse before
    /// it has parsed the call). (SPEC S2)
    #[test]
    fn s2_a_refusal_decodes_as_any_answer() {
        let frame = encode(&refused("no".into())).unwrap();
        type AppendAnswer = Answer<Result<AppendEntriesResponse<u64>, String>>;
        let decoded: AppendAnswer = postcard::from_bytes(&frame[4..]).unwrap();
        assert!(matches!(decoded, Answer::Refused(why) if why == "no"));
    }
}
