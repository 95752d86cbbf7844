//! The JSON shapes of the management API: what `kmsctl` and any script send and receive. These
//! are a public contract (the OpenAPI document in `admin-api/openapi.json` is generated from
//! them): fields are only added, never renamed. IDs travel as hex, states, roles and error codes
//! by their kebab-case names, instants as milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};
use statemachine::{DataUnitState, KeyState, Role};
use utoipa::{IntoParams, ToSchema};

/// Every refusal: [`ErrorBody`] (code, message, retryable, the reject's number, the next
/// step), with the codes of [`ErrorCode`]; the security endpoints answer with the same body.
pub use wire::{ErrorBody, ErrorCode};

/// What a command that changed the cluster answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Done {
    /// Log index of the command: pass it as `min_index` to read your write from any KMA.
    pub index: u64,
    /// Whatever the command created or counted, e.g. `{"node_id": 4}` or `{"count": 12}`.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Query parameters of every read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
pub struct ReadParams {
    /// Wait until this KMA has applied at least this log index (read-your-writes).
    pub min_index: Option<u64>,
    /// `linearizable`: confirm leadership with a quorum first, so the answer is current.
    pub consistency: Option<String>,
}

// ---- Cluster (SPEC C1–C8) ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    pub cluster_id: Option<String>,
    /// The KMA that answered.
    pub answered_by: String,
    pub leader: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub kmas: Vec<KmaHealth>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KmaHealth {
    pub name: String,
    pub node_id: u64,
    pub site: String,
    /// `member`, `pending` (created, not joined), as the replicated record says.
    pub status: String,
    /// `leader`, `follower`, `learner` or `unknown`, as the answering KMA sees it.
    pub role: String,
    /// Whether the answering KMA reached it just now.
    pub reachable: bool,
    pub locked: bool,
    pub autonomous_unlock: bool,
    pub software_version: u32,
    /// Log entries it is behind the leader (known on the leader only).
    pub replication_lag: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub management_address: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Site {
    pub name: String,
    pub created_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewSite {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Kma {
    pub name: String,
    pub node_id: u64,
    pub site: String,
    pub status: String,
    pub locked: bool,
    pub autonomous_unlock: bool,
    pub software_version: u32,
    pub created_at_ms: u64,
}

/// A KMA entry for a new appliance; the passphrase is the one `kma join` will be given.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct NewKma {
    pub name: String,
    pub site: String,
    pub passphrase: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecuritySettings {
    pub passphrase_len_min: u32,
    pub login_failures_max: u32,
    pub login_throttle_ms: u64,
    pub quorum_operation_ttl_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyPoolLimits {
    pub low_water: u32,
    pub high_water: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    pub security: SecuritySettings,
    pub key_pool: KeyPoolLimits,
    pub key_pool_ready: u64,
    pub key_pool_generated: u64,
}

// ---- Users and the quorum (SPEC S1–S4) ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    /// Kebab-case role names: `security-officer`, `compliance-officer`, `operator`,
    /// `backup-operator`, `auditor`.
    pub roles: Vec<String>,
    pub enabled: bool,
    pub created_at_ms: u64,
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct NewUser {
    pub id: String,
    pub roles: Vec<String>,
    pub passphrase: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Roles {
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Enabled {
    pub enabled: bool,
}

/// A KMIP client's certificate request (PEM PKCS#10), for its enrollment by an Operator.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct KmipEnrollment {
    pub csr_pem: String,
}

/// The certificate a KMIP client presents from now on, with the CA that signed it and the
/// fingerprint recorded (SHA-256 of the DER, hex).
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct KmipCertificate {
    pub agent: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub fingerprint: String,
    pub index: u64,
}

/// What a KMIP client may do beyond what every agent may (issue 19).
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct KmipRights {
    /// Revoke and Destroy over KMIP (agents may neither compromise nor destroy keys otherwise,
    /// SPEC S1, O7); Destroy still needs a deactivated or compromised key.
    pub revoke_and_destroy: bool,
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct Passphrase {
    pub passphrase: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuorumView {
    pub members: Vec<String>,
    pub threshold: u8,
    pub pending: Vec<QuorumOperationView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuorumOperationView {
    pub id: u64,
    /// e.g. `unlock-kma kma2`.
    pub operation: String,
    pub started_by: String,
    pub started_at_ms: u64,
    pub expires_at_ms: u64,
    pub approvals: Vec<String>,
    pub threshold: u8,
}

/// Starts a quorum operation; members then approve it (`POST /v1/quorum/approve`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewQuorumOperation {
    /// `join-kma`, `unlock-kma`, `enable-autonomous-unlock`, `restore-from-backup` or
    /// `rotate-ca`.
    pub operation: String,
    /// The KMA, or for `restore-from-backup` the backup ID; empty for `rotate-ca`.
    #[serde(default)]
    pub target: String,
    pub ttl_ms: Option<u64>,
}

// ---- Key policies, key groups, agents (SPEC O1–O3) ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyPolicy {
    pub name: String,
    pub encryption_period_ms: u64,
    pub cryptoperiod_ms: u64,
    pub allow_export: bool,
    pub allow_import: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyFlags {
    pub allow_export: bool,
    pub allow_import: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyGroup {
    pub name: String,
    pub policy: String,
    pub keys: u64,
    pub created_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewKeyGroup {
    pub name: String,
    pub policy: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub site: String,
    pub enrolled: bool,
    pub enabled: bool,
    pub key_groups: Vec<String>,
    pub default_key_group: Option<String>,
    pub created_at_ms: u64,
    /// Whether a Security Officer granted this agent, as a KMIP client, Revoke and Destroy
    /// (issue 19; absent from a KMA of an earlier version: false).
    #[serde(default)]
    pub kmip_revoke_and_destroy: bool,
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct NewAgent {
    pub id: String,
    pub site: String,
    /// The enrollment passphrase the drive will be given.
    pub passphrase: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SiteName {
    pub site: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupName {
    pub group: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
pub struct AgentQuery {
    pub site: Option<String>,
    pub enabled: Option<bool>,
    /// Only agents that can access this key group.
    pub group: Option<String>,
    /// Resume after this agent ID (the `next` of the previous page).
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub min_index: Option<u64>,
}

/// One page of a list; `next` is the cursor to pass as `after`, absent on the last page.
/// A page may hold fewer rows than asked (even none) while `next` is present: each page
/// examines a bounded number of records (SPEC U2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next: Option<String>,
}

// ---- Keys and data units (SPEC O4–O9) ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Key {
    pub id: String,
    pub state: String,
    pub group: Option<String>,
    /// `pool`, `imported-1x`, `transferred` or `registered-kmip`.
    pub origin: String,
    pub created_at_ms: u64,
    pub activated_at_ms: Option<u64>,
    pub encryption_ends_at_ms: Option<u64>,
    pub deactivates_at_ms: Option<u64>,
    pub compromised_at_ms: Option<u64>,
    pub destroyed_at_ms: Option<u64>,
    pub data_units: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
pub struct KeyQuery {
    /// A key state name, e.g. `deactivated`.
    pub state: Option<String>,
    pub group: Option<String>,
    /// Only the keys of this data unit (ID in hex).
    pub data_unit: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub min_index: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataUnit {
    pub id: String,
    pub external_tag: String,
    pub state: String,
    pub created_at_ms: u64,
    pub keys: Vec<DataUnitKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataUnitKey {
    pub key_id: String,
    pub in_use: bool,
    pub state: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
pub struct DataUnitQuery {
    /// Exact external tag (VOLSER).
    pub tag: Option<String>,
    /// A data unit state name, e.g. `needs-rekey`.
    pub state: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub min_index: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyIds {
    pub keys: Vec<String>,
}

/// Which keys of the selected data units a destroy takes (SPEC O7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DestroyOption {
    DeactivatedOnly,
    CompromisedOnly,
    DeactivatedAndCompromised,
}

/// Destroys keys of data units (SPEC O7, O9). Without `confirm` the answer is the preview;
/// with the preview's `digest` as `confirm`, the destroy runs if the impact is still the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DestroyDataUnitKeys {
    pub data_units: Vec<String>,
    pub option: DestroyOption,
    pub confirm: Option<String>,
}

/// Moves the keys of data units to another key group (SPEC O8, O9); `confirm` as above.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeKeyGroup {
    pub data_units: Vec<String>,
    pub group: String,
    pub confirm: Option<String>,
}

/// Destroys keys by ID (SPEC O7); `confirm` as above.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DestroyKeys {
    pub keys: Vec<String>,
    pub confirm: Option<String>,
}

/// What an operation would do; repeat the request with `confirm` = `digest` to carry it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImpactPreview {
    pub keys: Vec<String>,
    /// Every data unit that uses one of the keys: on a destroy, these lose access.
    pub data_units_losing_access: Vec<String>,
    /// Those outside the selection that share the keys: the ripple effect.
    pub shared_with_unselected: Vec<String>,
    pub digest: String,
}

/// Either the preview (nothing changed yet) or the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum PreviewOrDone {
    Preview(ImpactPreview),
    Done(Done),
}

// ---- Backups (SPEC B2, B4, B5) ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    pub id: u64,
    /// `database` or `core-security`.
    pub kind: String,
    pub kma: String,
    pub file_name: String,
    pub covers_index: u64,
    pub taken_at_ms: u64,
    pub destroyed: bool,
    /// The user who took it; empty for a scheduled backup.
    #[serde(default)]
    pub taken_by: String,
    #[serde(default)]
    pub size_bytes: u64,
    /// SHA-256 of the file as the KMA wrote it (hex).
    #[serde(default)]
    pub file_sha256: String,
    /// The latest restore drill of a database backup (SPEC B5): `passed`, `failed` or empty.
    #[serde(default)]
    pub drill: String,
    #[serde(default)]
    pub drill_detail: String,
}

/// A database backup this KMA wrote and holds for the caller to fetch (SPEC B2): fetch it
/// with `GET /v1/backups/database/{backup_uuid}`, keep both files, then confirm with
/// `POST /v1/backups/database/{backup_uuid}/saved`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseBackupTaken {
    pub backup_uuid: String,
    pub covers_index: u64,
    pub size_bytes: u64,
    /// SHA-256 of the data file (hex): check the file fetched against it.
    pub sha256: String,
    /// The backup key file's text (the backup key wrapped under the master key).
    pub key_file: String,
    /// A file name that says which cluster and index the backup holds.
    pub file_name: String,
}

/// What a client kept: the KMA records the backup only once it is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupKept {
    /// The file name the client kept it under (informational, listed).
    pub file_name: String,
    /// SHA-256 of the file kept (hex): must be the one the KMA wrote.
    pub sha256: String,
}

/// A backup recorded in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupRecorded {
    pub id: u64,
    pub index: u64,
}

/// The core security backup of the current quorum (SPEC B1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CoreSecurityBackupFile {
    /// The quorum change this file holds: a newer change needs a new file.
    pub quorum_version: u64,
    pub file_name: String,
    /// The file's text (TOML): member IDs readable, shares wrapped, no clear secret.
    pub text: String,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupSchedule {
    /// `None` turns scheduled backups off.
    pub interval_ms: Option<u64>,
    /// The KMA that takes them; `None`: a follower (on a one-KMA cluster, the KMA itself).
    /// It writes them into the `backup_dir` of its `kma.toml` (docs/operations.md).
    pub kma: Option<String>,
}

// ---- The audit log (SPEC S5) ----

/// One audit event with its place in the hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Position in the cluster-wide chain (from 1).
    pub seq: u64,
    /// Log index of the command that caused it.
    pub index: u64,
    pub at_ms: u64,
    /// e.g. `command`, `login`, `authentication-failure`, `key-state-changed`.
    pub kind: String,
    /// `user:<id>`, `agent:<id>`, `system`, when the event names one.
    pub actor: Option<String>,
    pub kma: Option<String>,
    /// `applied`, `rejected:<code>`, when the event is a command.
    pub outcome: Option<String>,
    /// The event in full, as words.
    pub detail: String,
    /// The chain link after this event (hex SHA-256).
    pub link: String,
    /// The event's canonical encoding (hex postcard), from which `link` is recomputed.
    pub encoded: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Resume after this record: the `next` of the previous page (opaque).
    pub after: Option<String>,
    pub limit: Option<usize>,
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Only events naming this actor (`user:alice`, `agent:drive-1`, `system`).
    pub actor: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub min_index: Option<u64>,
}

/// Where this KMA's audit log starts and where the cluster's chain stands now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditHead {
    /// The chain position before this KMA's first stored event (0 from the cluster's start).
    pub anchor_seq: u64,
    pub anchor_link: String,
    /// Every position this KMA's log starts again from: the first is the anchor above; each
    /// later one follows a snapshot install that skipped events this KMA never stored (they
    /// are on the other KMAs), so a verifier restarts there instead of reporting a deletion.
    pub anchors: Vec<AuditAnchor>,
    /// The replicated chain head: every KMA that applied `index` has the same.
    pub head_seq: u64,
    pub head_link: String,
    pub index: u64,
}

/// A chain position a local audit log (re)starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditAnchor {
    pub seq: u64,
    pub link: String,
}

// ---- Login and quorum approvals (the node's security endpoints; JSON) ----

/// `POST /v1/login/proof` (users) and `/v1/join/proof` (KMAs): the answer to a challenge and
/// a certificate request for the key pair the client made (its private key stays with it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProofRequest {
    pub proof: security_core::challenge::ClientProof,
    pub csr_pem: String,
    /// Joining KMAs only: how the others reach its management listener.
    pub management_advertise: Option<String>,
}

/// A successful login: the server's proof of itself, then the client's certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginGranted {
    pub server_final: security_core::challenge::ServerFinal,
    pub cert_pem: String,
    pub ca_pem: String,
    /// Users: seconds the certificate is valid for.
    pub valid_for_s: u64,
    /// The log index of the entry that recorded this login (its certificate): a KMA accepts
    /// the certificate once it has applied that index, so the client sends it with every
    /// request ([`LOGIN_INDEX_HEADER`]). 0 from a KMA that does not record logins.
    #[serde(default)]
    pub login_index: u64,
}

/// The request header that carries [`LoginGranted::login_index`] on every request of a
/// session: a KMA that has not applied the login yet waits for that index before it judges the
/// certificate, instead of refusing a session another KMA granted a moment ago. Left out when
/// the index is 0.
pub const LOGIN_INDEX_HEADER: &str = "kms-login-index";

/// `POST /v1/quorum/approve`: a quorum member approves through a user's session (SPEC S4).
/// The passphrase unwraps the member's share on the KMA that needs it; it is not stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApproveRequest {
    pub operation: u64,
    pub member: String,
    pub passphrase: String,
    /// The index of the entry that started the operation, so any KMA can see it.
    pub min_index: u64,
    /// Set by a KMA that forwards the approval: the user it authenticated.
    pub on_behalf_of: Option<String>,
}

/// `POST /v1/quorum/change`: a new quorum (a Security Officer's). The KMA splits its master key
/// among the new members and holds the shares until each member has entered their passphrase
/// in their own call ([`QuorumMemberPassphrase`]): nobody types another member's (SPEC S4).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeQuorumRequest {
    /// The new members' IDs.
    pub members: Vec<String>,
    pub threshold: u8,
    pub ttl_ms: Option<u64>,
}

/// The answer to [`ChangeQuorumRequest`] and to each [`QuorumMemberPassphrase`]: which new
/// members have not entered their passphrase yet; once none is left, the quorum operation that
/// the current quorum approves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeQuorumProgress {
    /// Names the change in the members' calls; held by the KMA that answered, in memory, for
    /// an hour.
    pub change: u64,
    pub waiting_for: Vec<String>,
    /// The `ChangeQuorum` operation, started once every member wrapped their share.
    pub operation: Option<u64>,
    /// The log index at which it was started.
    pub index: Option<u64>,
}

/// `POST /v1/quorum/change/member`: one new member's passphrase, which wraps that member's
/// share of a pending change. Sent through a Security Officer's session, one call per member.
#[derive(Clone, Serialize, Deserialize)]
pub struct QuorumMemberPassphrase {
    pub change: u64,
    pub member: String,
    pub passphrase: String,
}

/// The path of [`MemberUnlockRequest`] on a KMA's management listener.
pub const MEMBER_UNLOCK_PATH: &str = "/v1/unlock/member";

/// `POST /v1/unlock/member`: a quorum member gives their share to a locked KMA, straight, with
/// their passphrase alone (SPEC S4). After a cold restart every KMA is locked and none can sign
/// a user certificate, so this is the one call a KMA serves without a client certificate: the
/// TLS connection authenticates the KMA, the passphrase (which unwraps the member's share held
/// in the replicated state) authenticates the member, as the unseal keys of Vault do. The
/// passphrase is zeroized when the request is dropped, on the client and on the KMA.
#[derive(Clone, Serialize, Deserialize)]
pub struct MemberUnlockRequest {
    pub member: String,
    pub passphrase: String,
}

impl std::fmt::Debug for MemberUnlockRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberUnlockRequest")
            .field("member", &self.member)
            .field("passphrase", &"<redacted>")
            .finish()
    }
}

impl Drop for MemberUnlockRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.passphrase);
    }
}

/// The answer to [`MemberUnlockRequest`]: whose shares the locked KMA holds so far, how many it
/// needs, and whether it unlocked. The shares are held in the KMA's memory only, until it
/// unlocks or restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUnlockProgress {
    /// The KMA that answered (the locked one), and its Raft node ID.
    pub kma: String,
    pub node_id: u64,
    /// The members whose share it holds, this one included.
    pub members_given: Vec<String>,
    /// How many shares unlock it.
    pub threshold: u32,
    pub unlocked: bool,
}

impl MemberUnlockProgress {
    /// How many more members must give their share before the KMA can unlock (0 once the
    /// threshold is reached).
    pub fn members_missing(&self) -> u64 {
        let given = u64::try_from(self.members_given.len()).unwrap_or(u64::MAX);
        u64::from(self.threshold).saturating_sub(given)
    }
}

// ---- Names of enums on the wire ----

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::SecurityOfficer => "security-officer",
        Role::ComplianceOfficer => "compliance-officer",
        Role::Operator => "operator",
        Role::BackupOperator => "backup-operator",
        Role::Auditor => "auditor",
    }
}

pub fn parse_role(name: &str) -> Option<Role> {
    Role::ALL.into_iter().find(|role| role_name(*role) == name)
}

pub fn parse_key_state(name: &str) -> Option<KeyState> {
    KeyState::ALL.into_iter().find(|state| state.name() == name)
}

pub fn key_state_names() -> impl Iterator<Item = &'static str> {
    KeyState::ALL.into_iter().map(KeyState::name)
}

pub fn parse_data_unit_state(name: &str) -> Option<DataUnitState> {
    [
        DataUnitState::NoKey,
        DataUnitState::Normal,
        DataUnitState::NeedsRekey,
        DataUnitState::Shredded,
    ]
    .into_iter()
    .find(|state| state.name() == name)
}

/// Where a KMS 1.x file goes (SPEC M1): `POST /v1/imports/1x?group=G`, the file as the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Import1xParams {
    /// The destination key group: its policy must allow import.
    pub group: String,
}

/// A KMS 1.x import this KMA started (SPEC M1): every line was read and checked; the keys are
/// being staged. Follow it with `GET /v1/imports/1x/{import_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Import1xStarted {
    /// 16 hex digits.
    pub import_id: String,
    /// Keys in the file (lines that are not blank).
    pub keys: u64,
    /// Batches the keys are staged in before the one commit.
    pub batches: u64,
}

/// Where a KMS 1.x import stands (SPEC M1). `status`: `staging`, then `committed` (the keys
/// became visible at once, at log index `index`) or `failed` (nothing was imported; `error`
/// says why, `line` names the file's line when one is at fault).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Import1xProgress {
    pub import_id: String,
    pub group: String,
    pub keys_total: u64,
    /// Keys staged so far, duplicates included.
    pub keys_staged: u64,
    pub status: String,
    /// Keys imported, once committed.
    pub imported: u64,
    /// Keys held already with the same value (or repeated in the file), once committed.
    pub duplicates: u64,
    pub index: u64,
    pub error: Option<ErrorBody>,
    pub line: Option<u64>,
}

// ---- Partner key transfer (SPEC T1-T4) ----

/// This cluster's transfer public keys (SPEC T1): give `public_keys` to the partner, and
/// compare `fingerprint` with them by another channel (a phone call) before either side's
/// quorum records the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferKey {
    /// `kmst1:` and 128 hex digits: the X25519 key, then the Ed25519 key.
    pub public_keys: String,
    /// SHA-256 of the public keys, in groups of four hex digits.
    pub fingerprint: String,
    pub created_at_ms: u64,
}

/// A transfer partner (SPEC T2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Partner {
    pub name: String,
    pub public_keys: String,
    pub fingerprint: String,
    pub enabled: bool,
    /// Key groups whose keys may be exported to it.
    pub export_groups: Vec<String>,
    /// Key groups its files may be imported into.
    pub import_groups: Vec<String>,
    pub created_at_ms: u64,
}

/// A partner to record, or new keys for one: starts the quorum operation (SPEC S4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewPartner {
    pub name: String,
    /// The partner's `kmsctl transfer key show`, `kmst1:...`.
    pub public_keys: String,
    /// How long the approvals may take, in milliseconds (default: the cluster's).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// A key group assigned to a partner, for `export` or `import` (SPEC T2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartnerGroup {
    pub group: String,
    /// `export` or `import`.
    pub direction: String,
}

/// What to export (SPEC T3): data units by ID (hex) and/or by external tag.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferExportRequest {
    pub partner: String,
    #[serde(default)]
    pub data_units: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Where a partner's file goes (SPEC T4): `POST /v1/transfer/import?partner=P&group=G`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransferImportParams {
    /// The partner that sent the file: its signature must verify with that partner's keys.
    pub partner: String,
    /// A key group assigned to the partner for import, whose policy allows import.
    pub group: String,
}
