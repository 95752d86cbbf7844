//! KMIP objects (SPEC U5, issue 19): what a KMIP client says about a key beyond the key itself.
//!
//! A KMIP key is a key of this cluster: drawn from the replicated pool by a committed command,
//! in the client's default key group, bound to a data unit whose external tag is the cartridge
//! barcode. What KMIP adds is kept beside it, by key ID: the client's attributes (names,
//! Application Specific Information, custom `x-` attributes …), its usage mask, and whether
//! the client activated it.
//!
//! The two lifecycles meet as follows (docs/kmip.md has the table). O4 starts a key's dates at
//! its first use, and a KMIP Create is that use: a library asks for a key to write a tape with
//! it, so the key is Protect-and-process from its Create. KMIP, though, calls a key Pre-Active
//! until the client sends Activate, and the Tape Library profile never does (TL-M-2, TL-M-3
//! read State = Pre-Active after a Get): so the KMIP state of an active key is Pre-Active until
//! the client's Activate, Active after it. Deactivated, Compromised and the destroyed states
//! map one to one. Destroy follows O7 whatever KMIP calls the key: a Protect-and-process key
//! cannot be destroyed, so a client revokes before it destroys.
//!
//! Locate by name and by Application Specific Information is indexed (`Index::kmip_names`,
//! `Index::kmip_application_info`); any other filter scans at most `KMIP_LOCATE_SCAN_MAX`
//! objects and is refused past that (SPEC U2: every list is bounded).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::check::check_text;
use crate::ids::{KeyId, KEY_ID_LEN};
use crate::key::{Key, KeyState};
use crate::reject::Reject;
use crate::state::State;

/// Attributes one KMIP object keeps (the Tape Library profile asks for at least 30 vendor
/// attributes per object).
pub const KMIP_ATTRIBUTES_MAX: usize = 64;
pub const KMIP_ATTRIBUTE_NAME_LEN_MAX: usize = 128;
pub const KMIP_TEXT_LEN_MAX: usize = 256;
/// Objects a Locate without a name or Application Specific Information examines at most.
pub const KMIP_LOCATE_SCAN_MAX: usize = 100_000;
/// Identifiers one Locate answers at most, whatever Maximum Items the client asked for.
pub const KMIP_LOCATE_ITEMS_MAX: usize = 1_000;
/// Distinct (agent, operation) counts one `RecordKmipReads` carries.
pub const KMIP_READ_COUNTS_MAX: usize = 1_000;
/// Key IDs one audited read count names at most; the rest are counted, not named.
pub const KMIP_READ_KEYS_MAX: usize = 1_000;

const KEY_ID_FIRST: KeyId = KeyId([0; KEY_ID_LEN]);
const KEY_ID_LAST: KeyId = KeyId([u8::MAX; KEY_ID_LEN]);

/// The attribute names a client may set, besides custom ones (`x-…`, `y-…`).
pub const KMIP_SETTABLE: [&str; 6] = [
    "Name",
    "Application Specific Information",
    "Alternative Name",
    "Object Group",
    "Contact Information",
    "Operation Policy Name",
];

/// An attribute's value, in the shapes KMIP gives the settable ones.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KmipValue {
    Text(String),
    Integer(i32),
    /// Seconds since the Unix epoch, as KMIP's Date-Time.
    DateTime(i64),
    /// A Name or an Alternative Name: the text and how to read it (KMIP's type enumeration).
    Name {
        value: String,
        name_type: u32,
    },
    /// Application Specific Information: a namespace ("LIBRARY-LTO") and its data.
    ApplicationInfo {
        namespace: String,
        data: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KmipAttribute {
    pub name: String,
    pub value: KmipValue,
}

impl KmipAttribute {
    pub fn new(name: &str, value: KmipValue) -> KmipAttribute {
        KmipAttribute { name: name.into(), value }
    }
}

/// The KMIP side of one key. Persisted (snapshot records of format 4): fields are only ever
/// appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipObject {
    /// The agent (KMIP client) that created or registered the key.
    pub owner: String,
    /// KMIP's Cryptographic Usage Mask, as the client gave it.
    pub usage_mask: u32,
    /// When the client sent Activate: KMIP reports Pre-Active until then.
    pub activated_at_ms: Option<u64>,
    pub last_change_ms: u64,
    /// Counts the changes; an attribute change names the revision it was computed from, so two
    /// clients editing at once cannot lose one's change.
    pub revision: u64,
    /// In the order given; several of one name are its instances (index 0, 1 …).
    pub attributes: Vec<KmipAttribute>,
}

impl KmipObject {
    /// The cartridge barcode, for the data unit's external tag: the first Alternative Name
    /// (KMIP 1.2 on), else the text of `x-Barcode` (the Tape Library profile for 1.0 and 1.1).
    pub fn barcode(&self) -> Option<&str> {
        let alternative = self.attributes.iter().find_map(|a| match &a.value {
            KmipValue::Name { value, .. } if a.name == "Alternative Name" => Some(value.as_str()),
            _ => None,
        });
        alternative.or_else(|| {
            self.attributes.iter().find_map(|a| match &a.value {
                KmipValue::Text(text) if a.name == "x-Barcode" => Some(text.as_str()),
                _ => None,
            })
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.attributes.iter().filter_map(|a| match &a.value {
            KmipValue::Name { value, .. } if a.name == "Name" => Some(value.as_str()),
            _ => None,
        })
    }

    pub fn application_info(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes.iter().filter_map(|a| match &a.value {
            KmipValue::ApplicationInfo { namespace, data } => {
                Some((namespace.as_str(), data.as_str()))
            }
            _ => None,
        })
    }
}

pub fn is_custom_attribute(name: &str) -> bool {
    name.starts_with("x-") || name.starts_with("y-")
}

/// Checks a client's attributes: known names with the value shape each takes, custom ones of
/// Text, Integer or Date-Time, every text bounded and free of control characters.
pub fn check_kmip_attributes(attributes: &[KmipAttribute]) -> Result<(), Reject> {
    crate::check::check_count("KMIP attributes", attributes.len(), KMIP_ATTRIBUTES_MAX)?;
    for attribute in attributes {
        let name = attribute.name.as_str();
        check_text("KMIP attribute name", name, KMIP_ATTRIBUTE_NAME_LEN_MAX, false)?;
        let shape_ok = match (&attribute.value, name) {
            (KmipValue::Name { .. }, "Name" | "Alternative Name") => true,
            (KmipValue::ApplicationInfo { .. }, "Application Specific Information") => true,
            (
                KmipValue::Text(_),
                "Object Group" | "Contact Information" | "Operation Policy Name",
            ) => true,
            (KmipValue::Text(_) | KmipValue::Integer(_) | KmipValue::DateTime(_), custom) => {
                is_custom_attribute(custom)
            }
            _ => false,
        };
        if !shape_ok {
            return Err(Reject::KmipAttributeNotSettable { name: name.into() });
        }
        match &attribute.value {
            KmipValue::Text(text) | KmipValue::Name { value: text, .. } => {
                check_text(name, text, KMIP_TEXT_LEN_MAX, true)?;
            }
            KmipValue::ApplicationInfo { namespace, data } => {
                check_text("Application Namespace", namespace, KMIP_TEXT_LEN_MAX, false)?;
                check_text("Application Data", data, KMIP_TEXT_LEN_MAX, true)?;
            }
            KmipValue::Integer(_) | KmipValue::DateTime(_) => {}
        }
    }
    Ok(())
}

/// KMIP's states, numbered as its State enumeration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KmipState {
    PreActive = 1,
    Active = 2,
    Deactivated = 3,
    Compromised = 4,
    Destroyed = 5,
    DestroyedCompromised = 6,
}

impl KmipState {
    /// The KMIP state of a key in O4 `state`; `activated` says whether the client sent
    /// Activate (keys that are no KMIP object count as activated: a drive used them).
    pub fn of(state: KeyState, activated: bool) -> KmipState {
        match state {
            KeyState::Generated | KeyState::Ready => KmipState::PreActive,
            KeyState::ProtectAndProcess | KeyState::ProcessOnly if activated => KmipState::Active,
            KeyState::ProtectAndProcess | KeyState::ProcessOnly => KmipState::PreActive,
            KeyState::Deactivated => KmipState::Deactivated,
            KeyState::Compromised => KmipState::Compromised,
            KeyState::IncompletelyDestroyed | KeyState::CompletelyDestroyed => KmipState::Destroyed,
            KeyState::IncompletelyDestroyedCompromised
            | KeyState::CompletelyDestroyedCompromised => KmipState::DestroyedCompromised,
        }
    }
}

/// What a Locate asks for: every given condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KmipFilter {
    pub names: Vec<String>,
    /// (namespace, data)
    pub application_info: Vec<(String, String)>,
    /// Custom attributes that must be present with these values.
    pub custom: Vec<KmipAttribute>,
    pub state: Option<KmipState>,
}

impl State {
    pub fn kmip_object(&self, key_id: &KeyId) -> Option<&KmipObject> {
        self.kmip.get(key_id)
    }

    /// The KMIP state of `key` at `now_ms`.
    pub fn kmip_state_at(&self, key: &Key, now_ms: u64) -> KmipState {
        let activated = self.kmip.get(&key.id).is_none_or(|o| o.activated_at_ms.is_some());
        KmipState::of(self.key_state_at(key, now_ms), activated)
    }

    /// The KMIP objects `agent` may see that match `filter`, in key ID order, from the
    /// `offset`-th match, at most `max` (itself at most [`KMIP_LOCATE_ITEMS_MAX`]). A filter
    /// without a name or Application Specific Information examines every object, refused past
    /// `scan_max` of them ([`KMIP_LOCATE_SCAN_MAX`] from a KMA).
    pub fn kmip_locate(
        &self,
        agent: &str,
        filter: &KmipFilter,
        (offset, max): (usize, usize),
        scan_max: usize,
        now_ms: u64,
    ) -> Result<Vec<KeyId>, Reject> {
        let agent = self.agent(agent)?;
        let max = max.min(KMIP_LOCATE_ITEMS_MAX);
        let candidates: Vec<KeyId> = if let Some(name) = filter.names.first() {
            let range = (name.clone(), KEY_ID_FIRST)..=(name.clone(), KEY_ID_LAST);
            self.index.kmip_names.range(range).map(|(_, id)| *id).collect()
        } else if let Some((namespace, data)) = filter.application_info.first() {
            let (ns, data) = (namespace.clone(), data.clone());
            let range = (ns.clone(), data.clone(), KEY_ID_FIRST)..=(ns, data, KEY_ID_LAST);
            self.index.kmip_application_info.range(range).map(|(_, _, id)| *id).collect()
        } else {
            if self.kmip.len() > scan_max {
                return Err(Reject::KmipLocateTooBroad { objects: self.kmip.len() as u64 });
            }
            self.kmip.keys().copied().collect()
        };
        let visible = candidates.into_iter().filter(|id| {
            let (Some(key), Some(object)) = (self.keys.get(id), self.kmip.get(id)) else {
                return false;
            };
            key.group.is_some_and(|group| agent.can_access(group))
                && self.kmip_matches(key, object, filter, now_ms)
        });
        Ok(visible.skip(offset).take(max).collect())
    }

    fn kmip_matches(
        &self,
        key: &Key,
        object: &KmipObject,
        filter: &KmipFilter,
        now_ms: u64,
    ) -> bool {
        filter.names.iter().all(|name| object.names().any(|n| n == name))
            && filter
                .application_info
                .iter()
                .all(|(ns, data)| object.application_info().any(|(n, d)| n == ns && d == data))
            && filter.custom.iter().all(|wanted| object.attributes.contains(wanted))
            && filter.state.is_none_or(|state| self.kmip_state_at(key, now_ms) == state)
    }
}
