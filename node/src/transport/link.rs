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
//!
//! The server trusts nothing before it knows the caller (SPEC S2, issue #16): a connection
//! without a KMA certificate, or from a KMA the cluster deleted, is refused before any frame is
//! read; each frame's length is bounded by what its kind of call can need (postcard's first
//! byte is the variant) before its body is read; and a Raft call is run only when the leader
//! or candidate it speaks for is the caller itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::raft::VoteRequest;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest};
use raft_storage::{KmaRaft, Stage, WriteStages};
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

/// A vote request is a vote and a log ID: a few dozen bytes; this leaves room to spare.
const VOTE_FRAME_LEN_MAX: usize = 1024;

/// A snapshot call carries one chunk (`raft_storage::SNAPSHOT_CHUNK_LEN`) and its metadata.
const SNAPSHOT_FRAME_LEN_MAX: usize = raft_storage::SNAPSHOT_CHUNK_LEN + (64 << 10);

/// A forwarded proposal carries what a client may send in one request body, and its envelope.
const PROPOSE_FRAME_LEN_MAX: usize = ::wire::REQUEST_BODY_LEN_MAX + (64 << 10);

/// The start of the refusal a KMA the cluster deleted gets on every link: the deleted KMA's
/// network client recognises it and takes itself out (see [`Departure`]).
pub const REFUSED_DELETED: &str = "deleted KMA:";

/// The longest frame a call of the kind whose postcard variant index is `tag` may have.
fn call_len_max(tag: u8) -> Option<usize> {
    match tag {
        0 => Some(FRAME_LEN_MAX),
        1 => Some(VOTE_FRAME_LEN_MAX),
        2 => Some(SNAPSHOT_FRAME_LEN_MAX),
        3 => Some(PROPOSE_FRAME_LEN_MAX),
        _ => None,
    }
}

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
    read_frame_bounded(stream, |_tag| Some(FRAME_LEN_MAX)).await
}

/// Reads one frame's body, whose length may be at most `len_max` of its first byte (the
/// postcard variant index of a call): the bound is known before the body is allocated.
async fn read_frame_bounded<S: AsyncRead + Unpin>(
    stream: &mut S,
    len_max: impl Fn(u8) -> Option<usize>,
) -> std::io::Result<Option<Vec<u8>>> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > FRAME_LEN_MAX {
        return Err(invalid(format!("frame of {len} bytes, more than {FRAME_LEN_MAX}")));
    }
    if len == 0 {
        return Err(invalid("empty frame".into()));
    }
    let mut tag = [0u8; 1];
    stream.read_exact(&mut tag).await?;
    let Some(max) = len_max(tag[0]) else {
        return Err(invalid(format!("frame of unknown kind {}", tag[0])));
    };
    if len > max {
        return Err(invalid(format!("frame of kind {} is {len} bytes, more than {max}", tag[0])));
    }
    let mut body = vec![0u8; len];
    body[0] = tag[0];
    stream.read_exact(&mut body[1..]).await?;
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

/// What the link server needs: the Raft instance to run calls on, the applied state (which
/// KMAs the cluster deleted), the contact clock of the election watchdog, and the way up for
/// forwarded proposals.
#[derive(Clone)]
pub struct LinkServer {
    pub raft: openraft::Raft<KmaRaft>,
    pub state: raft_storage::StateHandle,
    /// Refuses leaders whose stamps run ahead of this KMA's clock.
    pub clock: crate::transport::clock::ClockGuard,
    pub contact: LeaderContact,
    pub inbound: tokio::sync::mpsc::Sender<InboundProposal>,
    /// Times each AppendEntries with entries this KMA answers (`Stage::FollowerAppend`).
    pub stages: WriteStages,
}

/// Why a KMA certificate naming node `node_id`, of fingerprint `certificate_sha256`, is refused
/// by this KMA's applied state, if it is (issue #16 points 2 and 3): the cluster deleted that
/// KMA (the deny list; the answer starts with [`REFUSED_DELETED`]), or the state records another
/// certificate for it, or its entry was never approved to join, or its certificate is of an
/// older cluster epoch than the state's (a KMA a recovery left behind, SPEC B7). A node ID this state has not
/// assigned yet is accepted: it may be a KMA that joined while this one was behind, and its
/// certificate is checked once this KMA has caught up.
pub fn kma_refusal(
    state: &statemachine::State,
    node_id: u64,
    certificate_sha256: &[u8; 32],
    certificate_epoch: Option<u32>,
) -> Option<String> {
    if state.kma_deleted(node_id) {
        return Some(format!(
            "{REFUSED_DELETED} KMA {node_id} was deleted from this cluster and takes part in \
             nothing; to use that machine again, wipe its data dir and join it anew"
        ));
    }
    // After the deletion check, so a KMA left behind by a recovery learns it is out.
    let Some(epoch) = certificate_epoch else {
        return Some(format!(
            "the certificate presented for KMA {node_id} names an unreadable cluster epoch: \
             refused"
        ));
    };
    if epoch < state.cluster_epoch() {
        return Some(crate::transport::tls::older_epoch(epoch, state.cluster_epoch()));
    }
    if state.kma_by_node_id(node_id).is_none()
        || state.kma_certificate_accepted(node_id, certificate_sha256)
    {
        return None;
    }
    let presented = hex::encode(&certificate_sha256[..8]);
    Some(format!(
        "the certificate presented for KMA {node_id} ({presented}…) is not the one the cluster \
         recorded for it (made with a copied CA key, or left from an earlier join): refused"
    ))
}

/// Set once this KMA learns that the cluster deleted it: from a peer's refusal on a Raft link
/// ([`REFUSED_DELETED`]) here, or from the applied state (the departure duty reads both).
#[derive(Clone, Default)]
pub struct Departure(Arc<std::sync::OnceLock<String>>);

impl Departure {
    /// Notes why this KMA is out; the first reason stays.
    pub fn note(&self, why: String) {
        let _ = self.0.set(why);
    }

    /// Why this KMA is out, once it learnt it.
    pub fn reason(&self) -> Option<String> {
        self.0.get().cloned()
    }
}

impl LinkServer {
    /// Why the KMA `caller` may not call on a link now, if it may not: it is deleted, or its
    /// certificate is not the one the cluster recorded for it.
    async fn refusal_of(
        &self,
        caller: u64,
        certificate_sha256: &[u8; 32],
        certificate_epoch: Option<u32>,
    ) -> Option<String> {
        kma_refusal(&*self.state.read().await, caller, certificate_sha256, certificate_epoch)
    }

    /// Why a Raft call is refused for the caller's clock (see [`crate::transport::clock`]).
    fn clock_refusal(&self, caller: u64, call: &RaftCall) -> Option<String> {
        match call {
            RaftCall::Append(request) => self.clock.refusal_now(caller, request),
            // Votes and snapshots carry no stamp of the caller's; a forwarded proposal is
            // stamped by the leader, not by the KMA that forwards it.
            RaftCall::Vote(_) | RaftCall::Snapshot(_) | RaftCall::Propose(_) => None,
        }
    }

    /// Serves one link until the client closes it, goes idle, or breaks the framing. Only a KMA
    /// certificate of this cluster may call (the handshake already refused other CAs), only the
    /// one the state records for that KMA, and only while the cluster has not deleted it: all
    /// are checked before any frame is read, the last two again every second.
    pub async fn serve(&self, (mut stream, remote): agent_gateway::server::HandedOff) {
        let certificate = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
        let fingerprint = certificate.map(crate::pki::der_fingerprint).unwrap_or_default();
        let epoch = certificate.and_then(agent_gateway::epoch::of_certificate);
        let Some(Identity::Kma(caller)) = certificate.and_then(crate::transport::tls::identity_of)
        else {
            let why = "Raft traffic needs a KMA certificate: present a certificate from this \
                       cluster's CA";
            let _ = write_answer(&mut stream, &refused(why.into())).await;
            return;
        };
        // Checked when the link opens and then at most once a second: the state's lock is not
        // taken for every AppendEntries, whose handling must not wait for an apply.
        let mut checked: Option<std::time::Instant> = None;
        loop {
            if checked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                if let Some(why) = self.refusal_of(caller, &fingerprint, epoch).await {
                    tracing::warn!(%remote, caller, %why, "raft link refused");
                    let _ = write_answer(&mut stream, &refused(why)).await;
                    return;
                }
                checked = Some(std::time::Instant::now());
            }
            let read = read_frame_bounded(&mut stream, call_len_max);
            let body = match tokio::time::timeout(IDLE_TIMEOUT, read).await {
                Ok(Ok(Some(body))) => body,
                Ok(Ok(None)) | Err(_) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "raft link ended");
                    return;
                }
            };
            let written = match postcard::from_bytes::<RaftCall>(&body) {
                Ok(call) => {
                    let refusal =
                        impersonated(caller, &call).or_else(|| self.clock_refusal(caller, &call));
                    match refusal {
                        Some(why) => {
                            // openraft retries a refused call at every heartbeat: the audit
                            // duties report it once, the log here only at debug level.
                            tracing::debug!(%remote, caller, %why, "raft call refused");
                            write_answer(&mut stream, &refused(why)).await
                        }
                        None => self.run(caller, call, &mut stream).await,
                    }
                }
                Err(e) => write_answer(&mut stream, &refused(format!("malformed call: {e}"))).await,
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
                let (started, carries_entries) = (Instant::now(), !request.entries.is_empty());
                let answer = self.raft.append_entries(request).await;
                if carries_entries && answer.is_ok() {
                    self.stages.record(Stage::FollowerAppend, started.elapsed());
                }
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

/// Why a Raft call does not speak for its caller, if it does not: an AppendEntries or a
/// snapshot comes from the leader it names, a vote request from the candidate it names. A KMA
/// cannot lead or campaign in another's name.
fn impersonated(caller: u64, call: &RaftCall) -> Option<String> {
    let (what, named) = match call {
        RaftCall::Append(request) => ("an AppendEntries for leader", request.vote.leader_id()),
        RaftCall::Vote(request) => ("a vote request for candidate", request.vote.leader_id()),
        RaftCall::Snapshot(request) => ("a snapshot from leader", request.vote.leader_id()),
        RaftCall::Propose(_) => return None,
    };
    let named = named.voted_for();
    (named != Some(caller)).then(|| {
        let named = named.map_or_else(|| "nobody".to_string(), |id| format!("KMA {id}"));
        format!("KMA {caller} sent {what} {named}: a KMA speaks only for itself")
    })
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

    /// Setup: frames written to a pipe as a caller would send them. Action: a vote request of
    /// 2 KiB, then a frame of an unknown kind, read as the server reads calls. Expect: both
    /// refused before their bodies are read (a vote request needs a few dozen bytes); a real
    /// vote request passes. (SPEC S2; issue #16 point 6)
    #[tokio::test]
    async fn s2_each_frame_is_bounded_by_its_kind_of_call() {
        let vote = RaftCall::Vote(VoteRequest::new(openraft::Vote::new(1, 1), None));
        let (mut writer, mut reader) = tokio::io::duplex(8192);
        writer.write_all(&encode(&vote).unwrap()).await.unwrap();
        let body = read_frame_bounded(&mut reader, call_len_max).await.unwrap().unwrap();
        assert!(matches!(postcard::from_bytes::<RaftCall>(&body), Ok(RaftCall::Vote(_))));

        let mut oversized = 2048u32.to_be_bytes().to_vec();
        oversized.push(1); // the variant index of a vote request
        writer.write_all(&oversized).await.unwrap();
        let error = read_frame_bounded(&mut reader, call_len_max).await.unwrap_err();
        assert!(error.to_string().contains("more than 1024"), "{error}");

        let (mut writer, mut reader) = tokio::io::duplex(64);
        writer.write_all(&[0, 0, 0, 9, 7]).await.unwrap();
        let error = read_frame_bounded(&mut reader, call_len_max).await.unwrap_err();
        assert!(error.to_string().contains("unknown kind 7"), "{error}");
    }

    /// Setup: a state after a recovery from a lost majority (cluster epoch 1) whose one KMA is
    /// node 1. Action: KMA certificates checked as links check them. Expect: a certificate of
    /// epoch 0 is refused for its epoch even for a node ID not assigned yet, one of epoch 1
    /// passes, one whose epoch does not read is refused. (SPEC B7)
    #[test]
    fn b7_links_refuse_a_kma_certificate_of_an_older_epoch() {
        use statemachine::command::{Envelope, InitCluster};
        use statemachine::quorum::{Quorum, QuorumMember};
        use statemachine::{Actor, ClusterId, Command};
        let mut state = statemachine::State::default();
        let envelope = |command| Envelope {
            time_ms: 1,
            origin_node_id: 1,
            actor: Actor::System,
            request_id: None,
            command,
        };
        let member = QuorumMember { id: "q1".into(), wrapped_share: vec![1] };
        let init = InitCluster {
            cluster_id: ClusterId(7),
            kma_name: "kma1".into(),
            site: "east".into(),
            security_officer: "so".into(),
            security_officer_verifier: vec![1],
            quorum: Quorum { members: vec![member], threshold: 1 },
            autonomous_unlock: false,
        };
        let (result, _) = state.apply(1, &envelope(Command::InitCluster(init))).into_chained();
        result.expect("initialized");
        let recover = Command::RecoverFromLostMajority {
            kma_name: "kma1".into(),
            node_id: 1,
            certificate_sha256: [1; 32],
        };
        state.apply(2, &envelope(recover)).into_chained().0.expect("recovered");
        assert_eq!(state.cluster_epoch(), 1);
        let unassigned = state.meta().next_node_id;
        let why = kma_refusal(&state, unassigned, &[9; 32], Some(0)).expect("refused");
        assert!(why.contains("cluster epoch 0, older than this cluster's epoch 1"), "{why}");
        assert_eq!(kma_refusal(&state, unassigned, &[9; 32], Some(1)), None);
        assert_eq!(kma_refusal(&state, 1, &[1; 32], Some(1)), None);
        assert!(kma_refusal(&state, 1, &[1; 32], None).is_some(), "unreadable epoch");
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
