//! The etcd side of the cluster bench: three members on loopback, either the way etcd's quick
//! start runs them (plaintext client and peer links) or the way it runs in production (issue 21
//! point 1): TLS on client and peer links, client certificates required on both, certificates
//! made by the bench with the KMAs' own CA code (`node::pki`), so both sides pay for the same kind
//! of handshake and record encryption.
//!
//! Writes are `Put`s over etcd's gRPC API: a minimal unary gRPC client over hyper's HTTP/2
//! (the etcd client crates compile `.proto` files with `protoc`), over TLS 1.3 with ALPN `h2`
//! when the cluster runs TLS.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use node::pki::{CertificateAuthority, Identity};
use tokio::process::Child;

use crate::{stop_all, SentTo, MEMBERS, STARTUP_TIMEOUT};

/// Plaintext member `n` (1..=3) serves clients on `CLIENT_PORT_BASE + n`, peers on `+ 10 + n`;
/// the TLS cluster's ports are [`TLS_PORT_OFFSET`] above those.
const CLIENT_PORT_BASE: u16 = 23000;
const TLS_PORT_OFFSET: u16 = 100;
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// The names every member's certificate carries (members and clients dial 127.0.0.1).
const HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

/// How the members' client and peer links run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Plaintext,
    Tls,
}

impl Links {
    pub fn name(self) -> &'static str {
        match self {
            Links::Plaintext => "etcd",
            Links::Tls => "etcd TLS",
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Links::Plaintext => "http",
            Links::Tls => "https",
        }
    }

    fn port_base(self) -> u16 {
        match self {
            Links::Plaintext => CLIENT_PORT_BASE,
            Links::Tls => CLIENT_PORT_BASE + TLS_PORT_OFFSET,
        }
    }

    fn client_address(self, member: usize) -> String {
        format!("127.0.0.1:{}", self.port_base() + member as u16)
    }

    fn client_url(self, member: usize) -> String {
        format!("{}://{}", self.scheme(), self.client_address(member))
    }

    fn peer_url(self, member: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port_base() + 10 + member as u16)
    }
}

/// The certificate files of a TLS cluster and the bench's client configurations.
struct Tls {
    dir: PathBuf,
    /// TLS 1.3 with the bench's client certificate, ALPN `h2` (gRPC).
    grpc: Arc<rustls::ClientConfig>,
    /// The same without ALPN, for the JSON gateway the leader is asked through.
    json: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// A CA, a certificate per member (server and client use: members dial each other with
    /// it) and one for the bench, all in `dir`.
    fn create(dir: &Path) -> anyhow::Result<Tls> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = CertificateAuthority::create(0).context("making the etcd CA")?;
        let write = |name: &str, text: &str| -> anyhow::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write("ca.pem", &ca.cert_pem)?;
        let hosts: Vec<String> = HOSTS.iter().map(|host| (*host).to_string()).collect();
        for member in 1..=MEMBERS {
            let (cert, key) = ca.issue(&Identity::Kma(member as u64), &hosts)?;
            write(&format!("e{member}.pem"), &cert)?;
            write(&format!("e{member}-key.pem"), &key)?;
        }
        let (cert, key) = ca.issue(&Identity::User("bench".into()), &hosts)?;
        let config = client_config(&ca.cert_pem, &cert, &key)?;
        let mut grpc = config.clone();
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls { dir: dir.to_path_buf(), grpc: Arc::new(grpc), json: Arc::new(config) })
    }

    fn member_args(&self, member: usize) -> Vec<String> {
        let path = |name: String| self.dir.join(name).display().to_string();
        let (cert, key, ca) = (
            path(format!("e{member}.pem")),
            path(format!("e{member}-key.pem")),
            path("ca.pem".into()),
        );
        vec![
            "--client-cert-auth".into(),
            "--trusted-ca-file".into(),
            ca.clone(),
            "--cert-file".into(),
            cert.clone(),
            "--key-file".into(),
            key.clone(),
            "--peer-client-cert-auth".into(),
            "--peer-trusted-ca-file".into(),
            ca,
            "--peer-cert-file".into(),
            cert,
            "--peer-key-file".into(),
            key,
        ]
    }
}

/// TLS 1.3 only, trusting `ca_pem`, presenting `cert_pem`.
fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.context("reading the etcd CA")?).context("trusting the etcd CA")?;
    }
    let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the bench's certificate")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("reading the bench's key")?
        .context("no key in the bench's key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with ring")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the bench's client certificate")
}

/// One etcd member with default durability (no `--unsafe-no-fsync`), its log in `etcd.log`.
fn spawn_member(
    root: &Path,
    links: Links,
    tls: Option<&Tls>,
    member: usize,
) -> anyhow::Result<Child> {
    let data_dir = root.join(format!("etcd{member}"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let log_path = data_dir.join("etcd.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let initial_cluster: Vec<String> =
        (1..=MEMBERS).map(|n| format!("e{n}={}", links.peer_url(n))).collect();
    let client_url = links.client_url(member);
    let peer_url = links.peer_url(member);
    tokio::process::Command::new("etcd")
        .args(["--name", &format!("e{member}")])
        .arg("--data-dir")
        .arg(data_dir.join("data"))
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &initial_cluster.join(",")])
        .args(["--initial-cluster-state", "new", "--initial-cluster-token", "bench"])
        .args(["--logger", "zap", "--log-outputs", "stderr"])
        .args(tls.map(|tls| tls.member_args(member)).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the etcd log handle")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting etcd (install it with scripts/install-bench-deps.sh)")
}

pub struct Cluster {
    pub links: Links,
    pub children: Vec<Child>,
    tls: Option<Tls>,
    leader: String,
    follower: String,
}

impl Cluster {
    pub async fn start(root: &Path, links: Links) -> anyhow::Result<Cluster> {
        let dir = root.join(match links {
            Links::Plaintext => "etcd",
            Links::Tls => "etcd-tls",
        });
        let tls = match links {
            Links::Plaintext => None,
            Links::Tls => Some(Tls::create(&dir.join("certs"))?),
        };
        let mut children = Vec::new();
        for member in 1..=MEMBERS {
            children.push(spawn_member(&dir, links, tls.as_ref(), member)?);
        }
        let mut cluster =
            Cluster { links, children, tls, leader: String::new(), follower: String::new() };
        match cluster.leader_and_follower().await {
            Ok((leader, follower)) => {
                cluster.leader = leader;
                cluster.follower = follower;
            }
            Err(error) => {
                cluster.stop().await;
                let logs = dir.join("etcd*/etcd.log");
                return Err(error.context(format!("etcd did not start (logs: {})", logs.display())));
            }
        }
        let mut probe = cluster.connect(SentTo::Leader).await?;
        if let Err(error) = probe.put(b"bench/probe", b"0").await {
            cluster.stop().await;
            bail!("the first {} write was refused: {error}", links.name());
        }
        Ok(cluster)
    }

    /// A connection of its own to the leader, or to a follower.
    pub async fn connect(&self, sent_to: SentTo) -> anyhow::Result<GrpcConnection> {
        let address = match sent_to {
            SentTo::Leader => &self.leader,
            SentTo::Follower => &self.follower,
        };
        GrpcConnection::connect(address, self.tls.as_ref().map(|tls| &tls.grpc)).await
    }

    pub async fn stop(&mut self) {
        stop_all(&mut self.children).await;
    }

    /// Asks every member (JSON gateway `POST /v3/maintenance/status`) who leads, until all
    /// agree; returns the leader's client address and one follower's.
    async fn leader_and_follower(&self) -> anyhow::Result<(String, String)> {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            http = http.use_preconfigured_tls((*tls.json).clone());
        }
        let http = http.build()?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let mut members = Vec::new();
            for member in 1..=MEMBERS {
                let url = format!("{}/v3/maintenance/status", self.links.client_url(member));
                let status: Option<serde_json::Value> = match http.post(url).body("{}").send().await
                {
                    Ok(response) => response.json().await.ok(),
                    Err(_) => None,
                };
                let id_of = |value: &serde_json::Value| value.as_str().map(str::to_string);
                members
                    .push(status.map(|s| (id_of(&s["header"]["member_id"]), id_of(&s["leader"]))));
            }
            let all: Option<Vec<(Option<String>, Option<String>)>> = members.into_iter().collect();
            if let Some(all) = all {
                let leader = all[0].1.clone();
                let at = all.iter().position(|(id, _)| leader.is_some() && *id == leader);
                if let (Some(at), true) = (at, all.iter().all(|(_, l)| *l == leader)) {
                    let follower = (at + 1) % MEMBERS;
                    return Ok((
                        self.links.client_address(at + 1),
                        self.links.client_address(follower + 1),
                    ));
                }
            }
            ensure!(
                Instant::now() < deadline,
                "the {} members did not agree on a leader in time",
                self.links.name()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A unary gRPC client for etcd's `KV/Put` on one HTTP/2 connection, enough to drive etcd the
/// way its own Go client does.
pub struct GrpcConnection {
    uri: String,
    sender: http2::SendRequest<Full<Bytes>>,
    connection: tokio::task::JoinHandle<()>,
}

impl GrpcConnection {
    async fn connect(
        address: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<GrpcConnection> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to etcd at {address}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, connection, scheme) = match tls {
            None => {
                let (sender, connection) = h2_handshake(stream, address).await?;
                (sender, connection, "http")
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                    .context("the members' name")?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, stream)
                    .await
                    .with_context(|| format!("TLS handshake with etcd at {address}"))?;
                let (sender, connection) = h2_handshake(stream, address).await?;
                (sender, connection, "https")
            }
        };
        Ok(GrpcConnection {
            uri: format!("{scheme}://{address}/etcdserverpb.KV/Put"),
            sender,
            connection,
        })
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let mut message = Vec::with_capacity(key.len() + value.len() + 4);
        protobuf_bytes_field(&mut message, 1, key);
        protobuf_bytes_field(&mut message, 2, value);
        let mut frame = Vec::with_capacity(message.len() + 5);
        frame.push(0); // not compressed
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        let request = hyper::Request::post(&self.uri)
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header(hyper::header::TE, "trailers")
            .body(Full::new(Bytes::from(frame)))
            .map_err(|e| format!("building the request: {e}"))?;
        self.sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let call = async {
            let response = self.sender.send_request(request).await.map_err(|e| e.to_string())?;
            let headers_status = response.headers().get("grpc-status").cloned();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?;
            let trailers_status = body.trailers().and_then(|t| t.get("grpc-status").cloned());
            match trailers_status.or(headers_status) {
                Some(status) if status == "0" => Ok(()),
                Some(status) => Err(format!("grpc-status {status:?}")),
                None => Err("no grpc-status in the answer".to_string()),
            }
        };
        tokio::time::timeout(WRITE_TIMEOUT, call)
            .await
            .map_err(|_| format!("no answer within {WRITE_TIMEOUT:?}"))?
    }
}

/// HTTP/2 over `io`, its connection driven by a task of its own.
async fn h2_handshake<T>(
    io: T,
    address: &str,
) -> anyhow::Result<(http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>)>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .with_context(|| format!("HTTP/2 handshake with etcd at {address}"))?;
    let connection = tokio::spawn(async move {
        let _ended = connection.await;
    });
    Ok((sender, connection))
}

impl Drop for GrpcConnection {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Appends a length-delimited protobuf field (wire type 2).
fn protobuf_bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    let mut length = bytes.len();
    while length >= 0x80 {
        out.push((length as u8 & 0x7f) | 0x80);
        length >>= 7;
    }
    out.push(length as u8);
    out.extend_from_slice(bytes);
}
