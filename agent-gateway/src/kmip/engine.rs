//! One KMIP request, run: each batch item in order (the server never reorders, so Batch Order
//! Option is always honoured), the ID placeholder carried from item to item (a Create then an
//! empty Get, TL-M-2), and Batch Error Continuation Option's Stop or Continue.
//!
//! Every rule about keys is the state machine's: a mutation is a committed command proposed in
//! the client's name; a read is a function of the state this KMA applied. A read that finds no
//! key confirms with a linearizable read before it answers "not found", since a library may
//! fail over to this KMA between its Create and its Get and KMIP has no index to wait for.

use kmip::attribute::{self as attr, Attribute};
use kmip::enums::{
    KeyFormatType, ObjectType, Operation, QueryFunction, ResultReason, RevocationReasonCode,
};
use kmip::message::{Failure, ProtocolVersion, Request, RequestBatchItem, ResponseBatchItem};
use kmip::{tag, Item, Value};
use security_core::key_wrap::{check_value, unwrap_key, wrap_key, KeyMaterial};
use statemachine::command::NewKey;
use statemachine::kmip::{
    KmipAttribute, KmipFilter, KmipState, KMIP_LOCATE_ITEMS_MAX, KMIP_LOCATE_SCAN_MAX,
};
use statemachine::{Command, KeyId, Reject, Reply, State};
use zeroize::Zeroizing;

use super::attributes::{from_client, of_key, to_kept};
use super::reads::ReadLog;
use crate::backend::{Backend, BackendError};
use crate::routes::now_ms;

/// The operations this server runs, in the order Query lists them.
pub const OPERATIONS: [Operation; 16] = [
    Operation::DISCOVER_VERSIONS,
    Operation::QUERY,
    Operation::CREATE,
    Operation::REGISTER,
    Operation::GET,
    Operation::GET_ATTRIBUTES,
    Operation::GET_ATTRIBUTE_LIST,
    Operation::ADD_ATTRIBUTE,
    Operation::MODIFY_ATTRIBUTE,
    Operation::DELETE_ATTRIBUTE,
    Operation::LOCATE,
    Operation::ACTIVATE,
    Operation::REVOKE,
    Operation::DESTROY,
    Operation::CHECK,
    Operation::SET_ATTRIBUTE,
];

/// An attribute change computed from a revision another client changed meanwhile is computed
/// again, this many times at most.
const ATTRIBUTE_CHANGE_TRIES: usize = 3;

/// A request being run for one client.
pub(crate) struct Session<'a, B> {
    pub backend: &'a B,
    pub agent: &'a str,
    pub reads: &'a ReadLog,
    pub version: ProtocolVersion,
    /// The ID placeholder: the key the last Create, Register, Locate or Get named.
    pub placeholder: Option<KeyId>,
}

type Outcome = Result<Vec<Item>, Failure>;

/// Runs every item of `request` in order; after a failure, the rest only if the client asked
/// to Continue.
pub(crate) async fn run<B: Backend>(
    backend: &B,
    agent: &str,
    reads: &ReadLog,
    request: &Request,
) -> Vec<ResponseBatchItem> {
    let mut session =
        Session { backend, agent, reads, version: request.header.version, placeholder: None };
    let stop_on_failure =
        request.header.batch_error_continuation != kmip::enums::BatchErrorContinuation::CONTINUE;
    let mut responses = Vec::with_capacity(request.items.len());
    for item in &request.items {
        let outcome = session.operation(item).await;
        let failed = outcome.is_err();
        responses.push(ResponseBatchItem {
            operation: Some(item.operation),
            id: item.id.clone(),
            outcome,
        });
        if failed && stop_on_failure {
            break;
        }
    }
    responses
}

/// A refusal of the state machine in KMIP's words; its message names the rule, never a value.
pub(crate) fn refusal(reject: &Reject, version: ProtocolVersion) -> Failure {
    let reason = match reject {
        Reject::UnknownKey { .. } | Reject::NotKmipObject { .. } => ResultReason::ITEM_NOT_FOUND,
        Reject::AgentCannotAccessKey { .. }
        | Reject::KmipRightNotGranted { .. }
        | Reject::PolicyForbidsImport { .. }
        | Reject::UnknownAgent { .. }
        | Reject::AgentDisabled { .. }
        | Reject::AgentNotEnrolled { .. }
        | Reject::AgentHasNoDefaultGroup { .. } => ResultReason::PERMISSION_DENIED,
        Reject::KmipWrongState { .. } | Reject::DestroyNeedsDeactivatedOrCompromised { .. }
            if version.is_2x() =>
        {
            ResultReason::WRONG_KEY_LIFECYCLE_STATE
        }
        Reject::KmipWrongState { .. } | Reject::DestroyNeedsDeactivatedOrCompromised { .. } => {
            ResultReason::ILLEGAL_OPERATION
        }
        Reject::KmipAttributeNotSettable { .. } | Reject::InvalidText { .. } => {
            ResultReason::INVALID_FIELD
        }
        Reject::KeyExists { .. } => ResultReason::OBJECT_ALREADY_EXISTS,
        _ => ResultReason::GENERAL_FAILURE,
    };
    let retry = if reject.is_retryable() { " (retryable: send it again)" } else { "" };
    Failure::new(reason, format!("{reject}{retry}"))
}

fn unavailable(error: &BackendError) -> Failure {
    let retry = if error.retryable { "; send it again, to this KMA or another" } else { "" };
    Failure::new(ResultReason::GENERAL_FAILURE, format!("{}{retry}", error.message))
}

fn missing(what: &str) -> Failure {
    Failure::new(ResultReason::MISSING_DATA, format!("the request lacks {what}"))
}

fn enumeration_of(item: Option<&Item>) -> Option<u32> {
    match item.map(|i| &i.value) {
        Some(Value::Enumeration(v)) => Some(*v),
        _ => None,
    }
}

fn integer_of(item: Option<&Item>) -> Option<i32> {
    match item.map(|i| &i.value) {
        Some(Value::Integer(v)) => Some(*v),
        _ => None,
    }
}

fn uid_item(key_id: &KeyId) -> Item {
    Item::text(tag::UNIQUE_IDENTIFIER, key_id.to_string())
}

impl<B: Backend> Session<'_, B> {
    async fn operation(&mut self, item: &RequestBatchItem) -> Outcome {
        let payload = &item.payload;
        match item.operation {
            Operation::DISCOVER_VERSIONS => Ok(discover_versions(payload)),
            Operation::QUERY => Ok(query(payload)),
            Operation::CREATE => self.create(payload).await,
            Operation::REGISTER => self.register(payload).await,
            Operation::GET => self.get(payload).await,
            Operation::GET_ATTRIBUTES => self.get_attributes(payload).await,
            Operation::GET_ATTRIBUTE_LIST => self.get_attribute_list(payload).await,
            Operation::ADD_ATTRIBUTE => self.change_attributes(payload, Change::Add).await,
            Operation::SET_ATTRIBUTE => self.change_attributes(payload, Change::Set).await,
            Operation::MODIFY_ATTRIBUTE => self.change_attributes(payload, Change::Modify).await,
            Operation::DELETE_ATTRIBUTE => self.change_attributes(payload, Change::Delete).await,
            Operation::LOCATE => self.locate(payload).await,
            Operation::ACTIVATE => {
                let key_id = self.uid(payload)?;
                self.propose(Command::ActivateKmipKey { key_id }).await?;
                Ok(vec![uid_item(&key_id)])
            }
            Operation::REVOKE => self.revoke(payload).await,
            Operation::DESTROY => {
                let key_id = self.uid(payload)?;
                self.propose(Command::DestroyKmipKey { key_id }).await?;
                Ok(vec![uid_item(&key_id)])
            }
            Operation::CHECK => self.check(payload).await,
            other => Err(Failure::new(
                ResultReason::OPERATION_NOT_SUPPORTED,
                format!(
                    "operation {} ({:#x}) is not offered here; Query lists those that are",
                    other.name(),
                    other.0
                ),
            )),
        }
    }

    /// The key a payload names, or the ID placeholder when it names none.
    fn uid(&self, payload: &Item) -> Result<KeyId, Failure> {
        match payload.child(tag::UNIQUE_IDENTIFIER).map(|i| &i.value) {
            Some(Value::TextString(text)) => KeyId::from_hex(text).ok_or_else(|| {
                Failure::new(
                    ResultReason::ITEM_NOT_FOUND,
                    format!("no key has the identifier {text:?}"),
                )
            }),
            Some(_) => Err(Failure::new(
                ResultReason::INVALID_FIELD,
                "a Unique Identifier is a Text String",
            )),
            None => self
                .placeholder
                .ok_or_else(|| missing("a Unique Identifier (and no earlier item set one)")),
        }
    }

    async fn propose(&mut self, command: Command) -> Result<Reply, Failure> {
        let applied = self
            .backend
            .propose(Some(self.agent), None, command)
            .await
            .map_err(|e| unavailable(&e))?;
        applied.result.map_err(|reject| refusal(&reject, self.version))
    }

    /// Reads the state; if `read` finds nothing, reads again after a linearizable barrier.
    async fn read_confirmed<R: Send>(
        &self,
        read: impl Fn(&State) -> Option<R> + Send + Sync,
    ) -> Result<Option<R>, Failure> {
        let found = self.backend.read(0, &read).await.map_err(|e| unavailable(&e))?;
        if found.is_some() {
            return Ok(found);
        }
        self.backend.read_linearizable(&read).await.map_err(|e| unavailable(&e))
    }

    async fn create(&mut self, payload: &Item) -> Outcome {
        check_object_type(payload)?;
        let attributes = attr::payload_attributes(payload, self.version)?;
        let client = from_client(&attributes, self.version)?;
        let command =
            Command::CreateKmipKey { usage_mask: client.usage_mask, attributes: client.kept };
        let Reply::KmipKey { key_id, .. } = self.propose(command).await? else {
            return Err(Failure::new(
                ResultReason::GENERAL_FAILURE,
                "the Create had an unexpected answer",
            ));
        };
        self.placeholder = Some(key_id);
        Ok(vec![
            Item::enumeration(tag::OBJECT_TYPE, ObjectType::SYMMETRIC_KEY.0),
            uid_item(&key_id),
        ])
    }

    async fn register(&mut self, payload: &Item) -> Outcome {
        check_object_type(payload)?;
        let attributes = attr::payload_attributes(payload, self.version)?;
        let client = from_client(&attributes, self.version)?;
        let material = register_material(payload)?;
        let master = self.backend.master_key().ok_or_else(locked)?;
        let cluster_id = self.backend.cluster_id().ok_or_else(locked)?;
        let key_id = KeyId::native(cluster_id, rand::random());
        let key = NewKey {
            id: key_id,
            material: wrap_key(&master, cluster_id, &key_id, &material),
            check_value: check_value(&material),
        };
        let command = Command::RegisterKmipKey {
            key,
            usage_mask: client.usage_mask,
            attributes: client.kept,
        };
        self.propose(command).await?;
        self.placeholder = Some(key_id);
        Ok(vec![uid_item(&key_id)])
    }

    async fn get(&mut self, payload: &Item) -> Outcome {
        let key_id = self.uid(payload)?;
        let format = enumeration_of(payload.child(tag::KEY_FORMAT_TYPE)).map(KeyFormatType);
        if format.is_some_and(|f| f != KeyFormatType::RAW) {
            return Err(Failure::new(
                ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                "keys are given in Raw format only",
            ));
        }
        if payload.child(tag::KEY_WRAPPING_SPECIFICATION).is_some() {
            return Err(Failure::new(
                ResultReason::FEATURE_NOT_SUPPORTED,
                "keys are not wrapped for clients; the mutual TLS session protects them",
            ));
        }
        let master = self.backend.master_key().ok_or_else(locked)?;
        let (agent, version) = (self.agent, self.version);
        type Found = (statemachine::key::WrappedKey, statemachine::ClusterId, u64);
        let read = move |state: &State| -> Option<Result<Found, Failure>> {
            let key = state.key(&key_id)?;
            Some(reachable(state, agent, key, version).and_then(|()| {
                let material = key.material.clone().ok_or_else(|| destroyed(&key_id, version))?;
                let cluster_id = state.cluster_id().unwrap_or_default();
                Ok((material, cluster_id, state.last_applied_index()))
            }))
        };
        let found = self.read_confirmed(read).await;
        let (material, cluster_id, index) = self.counted(Operation::GET, Some(key_id), found)?;
        let clear = unwrap_key(&master, cluster_id, &key_id, &material)
            .map_err(|e| Failure::new(ResultReason::CRYPTOGRAPHIC_FAILURE, e.to_string()))?;
        crate::handout::handed_out(
            crate::handout::Route::KmipGet,
            agent,
            &key_id,
            None,
            index,
            None,
        );
        self.placeholder = Some(key_id);
        let value = Zeroizing::new(clear.as_bytes().to_vec());
        Ok(vec![
            Item::enumeration(tag::OBJECT_TYPE, ObjectType::SYMMETRIC_KEY.0),
            uid_item(&key_id),
            symmetric_key(value.to_vec()),
        ])
    }

    /// Counts a read for the audit log and turns "found nothing" into Item Not Found.
    fn counted<R>(
        &self,
        operation: Operation,
        key_id: Option<KeyId>,
        found: Result<Option<Result<R, Failure>>, Failure>,
    ) -> Result<R, Failure> {
        let result = match found {
            Ok(Some(result)) => result,
            Ok(None) => Err(not_found(key_id)),
            Err(failure) => Err(failure),
        };
        self.reads.count(self.agent, operation.0, key_id, result.is_ok());
        result
    }

    async fn get_attributes(&mut self, payload: &Item) -> Outcome {
        let key_id = self.uid(payload)?;
        let wanted = requested_names(payload, self.version);
        let attributes = self.key_attributes(Operation::GET_ATTRIBUTES, key_id).await?;
        let chosen: Vec<Attribute> = if wanted.is_empty() {
            attributes
        } else {
            attributes.into_iter().filter(|a| wanted.contains(&a.name)).collect()
        };
        let mut out = vec![uid_item(&key_id)];
        out.extend(attr::response_attributes(&chosen, self.version));
        Ok(out)
    }

    async fn get_attribute_list(&mut self, payload: &Item) -> Outcome {
        let key_id = self.uid(payload)?;
        let attributes = self.key_attributes(Operation::GET_ATTRIBUTE_LIST, key_id).await?;
        let mut names: Vec<&str> = Vec::new();
        for attribute in &attributes {
            if !names.contains(&attribute.name.as_str())
                && attribute.to_item(self.version).is_some()
            {
                names.push(&attribute.name);
            }
        }
        let mut out = vec![uid_item(&key_id)];
        for name in names {
            if self.version.is_2x() {
                if let Some(known) = attr::known_by_name(name) {
                    out.push(Item::enumeration(tag::ATTRIBUTE_REFERENCE, known.tag.0));
                }
            } else {
                out.push(Item::text(tag::ATTRIBUTE_NAME, name));
            }
        }
        Ok(out)
    }

    async fn key_attributes(
        &mut self,
        operation: Operation,
        key_id: KeyId,
    ) -> Result<Vec<Attribute>, Failure> {
        let (agent, version) = (self.agent, self.version);
        let read = move |state: &State| {
            let key = state.key(&key_id)?;
            let now = now_ms();
            Some(
                reachable(state, agent, key, version)
                    .map(|()| of_key(state, key, state.kmip_object(&key_id), now)),
            )
        };
        let found = self.read_confirmed(read).await;
        let mut attributes = self.counted(operation, Some(key_id), found)?;
        if self.version.is_2x() {
            // Equal to Initial Date for every key here, and unreadable by 2.0 clients whose
            // attribute tables stop short of it (PyKMIP 0.11 refuses the whole response).
            attributes.retain(|a| a.name != "Original Creation Date");
        }
        self.placeholder = Some(key_id);
        Ok(attributes)
    }

    async fn change_attributes(&mut self, payload: &Item, change: Change) -> Outcome {
        let key_id = self.uid(payload)?;
        let (new, current) = change_items(payload, self.version)?;
        let new = new.map(|a| to_kept(&a, self.version)).transpose()?;
        for _ in 0..ATTRIBUTE_CHANGE_TRIES {
            let (agent, version) = (self.agent, self.version);
            let read = move |state: &State| {
                let key = state.key(&key_id)?;
                Some(reachable(state, agent, key, version).and_then(|()| {
                    state
                        .kmip_object(&key_id)
                        .cloned()
                        .ok_or_else(|| refusal(&Reject::NotKmipObject { key_id }, version))
                }))
            };
            let object = match self.read_confirmed(read).await? {
                Some(result) => result?,
                None => return Err(not_found(Some(key_id))),
            };
            let (attributes, echoed) =
                changed(&object.attributes, change, new.clone(), current.as_ref())?;
            let command =
                Command::SetKmipAttributes { key_id, revision: object.revision, attributes };
            let applied = self
                .backend
                .propose(Some(self.agent), None, command)
                .await
                .map_err(|e| unavailable(&e))?;
            match applied.result {
                Ok(_) => {
                    self.placeholder = Some(key_id);
                    let mut out = vec![uid_item(&key_id)];
                    if !self.version.is_2x() {
                        out.extend(
                            echoed.map(|kept| super::attributes::from_kept(&kept).to_pair()),
                        );
                    }
                    return Ok(out);
                }
                Err(Reject::KmipRevisionStale { .. }) => continue,
                Err(reject) => return Err(refusal(&reject, self.version)),
            }
        }
        Err(Failure::new(
            ResultReason::GENERAL_FAILURE,
            "the attributes kept changing under this request; send it again",
        ))
    }

    async fn locate(&mut self, payload: &Item) -> Outcome {
        let attributes = attr::payload_attributes(payload, self.version)?;
        let Some(filter) = locate_filter(&attributes, self.version)? else {
            return Ok(located(Vec::new(), self.version));
        };
        let max = integer_of(payload.child(tag::MAXIMUM_ITEMS))
            .map_or(KMIP_LOCATE_ITEMS_MAX, |n| n.max(0) as usize);
        let offset = integer_of(payload.child(tag::OFFSET_ITEMS)).map_or(0, |n| n.max(0) as usize);
        let agent = self.agent;
        let read = |state: &State| -> Option<Result<Vec<KeyId>, Reject>> {
            match state.kmip_locate(agent, &filter, (offset, max), KMIP_LOCATE_SCAN_MAX, now_ms()) {
                Ok(keys) if keys.is_empty() => None,
                other => Some(other),
            }
        };
        let found = self.read_confirmed(read).await?;
        let keys = match found {
            None => Vec::new(),
            Some(result) => result.map_err(|reject| refusal(&reject, self.version))?,
        };
        self.reads.count(self.agent, Operation::LOCATE.0, keys.first().copied(), true);
        if let Some(first) = keys.first() {
            self.placeholder = Some(*first);
        }
        Ok(located(keys, self.version))
    }

    async fn revoke(&mut self, payload: &Item) -> Outcome {
        let key_id = self.uid(payload)?;
        let code = payload
            .child(tag::REVOCATION_REASON)
            .and_then(|reason| enumeration_of(reason.child(tag::REVOCATION_REASON_CODE)))
            .map(RevocationReasonCode)
            .ok_or_else(|| missing("a Revocation Reason"))?;
        let compromised = matches!(
            code,
            RevocationReasonCode::KEY_COMPROMISE | RevocationReasonCode::CA_COMPROMISE
        );
        self.propose(Command::RevokeKmipKey { key_id, compromised }).await?;
        Ok(vec![uid_item(&key_id)])
    }

    async fn check(&mut self, payload: &Item) -> Outcome {
        let key_id = self.uid(payload)?;
        let (agent, version) = (self.agent, self.version);
        let read = move |state: &State| {
            let key = state.key(&key_id)?;
            Some(reachable(state, agent, key, version).and_then(|()| match key.material {
                Some(_) => Ok(()),
                None => Err(destroyed(&key_id, version)),
            }))
        };
        let found = self.read_confirmed(read).await;
        self.counted(Operation::CHECK, Some(key_id), found)?;
        self.placeholder = Some(key_id);
        Ok(vec![uid_item(&key_id)])
    }
}

#[derive(Clone, Copy)]
enum Change {
    Add,
    /// KMIP 2.0's Set Attribute: the first instance of that name replaced, or the attribute
    /// added when the key has none.
    Set,
    Modify,
    Delete,
}

/// The new attribute and the current one (with its index) a change names, in either version's
/// spelling: 1.x sends `Attribute` (or, for Delete, `Attribute Name` and `Attribute Index`);
/// 2.0 sends `New Attribute` and `Current Attribute` or an `Attribute Reference`.
fn change_items(
    payload: &Item,
    version: ProtocolVersion,
) -> Result<(Option<Attribute>, Option<Attribute>), Failure> {
    if version.is_2x() {
        let tagged = |wrapper: kmip::Tag| -> Result<Option<Attribute>, Failure> {
            match payload.child(wrapper).and_then(|w| w.children().first()) {
                Some(inner) => Attribute::from_item(inner, true).map(Some),
                None => Ok(None),
            }
        };
        let mut current = tagged(tag::CURRENT_ATTRIBUTE)?;
        if current.is_none() {
            if let Some(reference) = enumeration_of(payload.child(tag::ATTRIBUTE_REFERENCE)) {
                let known = attr::known_by_tag(kmip::Tag(reference)).ok_or_else(|| {
                    Failure::new(
                        ResultReason::INVALID_FIELD,
                        "that Attribute Reference is not one kept here",
                    )
                })?;
                current = Some(Attribute::new(known.name, Value::Structure(Vec::new())));
            }
        }
        return Ok((tagged(tag::NEW_ATTRIBUTE)?, current));
    }
    if let Some(pair) = payload.child(tag::ATTRIBUTE) {
        let attribute = Attribute::from_item(pair, false)?;
        return Ok((Some(attribute.clone()), Some(attribute)));
    }
    let name = match payload.child(tag::ATTRIBUTE_NAME).map(|n| &n.value) {
        Some(Value::TextString(name)) => name.clone(),
        _ => return Err(missing("an Attribute")),
    };
    let index = integer_of(payload.child(tag::ATTRIBUTE_INDEX)).unwrap_or(0).max(0) as u32;
    Ok((None, Some(Attribute { name, index, value: Value::Structure(Vec::new()) })))
}

/// The kept attributes after `change`, and the one to echo.
fn changed(
    kept: &[KmipAttribute],
    change: Change,
    new: Option<KmipAttribute>,
    current: Option<&Attribute>,
) -> Result<(Vec<KmipAttribute>, Option<KmipAttribute>), Failure> {
    let mut attributes = kept.to_vec();
    let position = |name: &str, index: u32| {
        attributes
            .iter()
            .enumerate()
            .filter(|(_, a)| a.name == name)
            .nth(index as usize)
            .map(|(at, _)| at)
    };
    let not_found = |name: &str| {
        Failure::new(
            ResultReason::ITEM_NOT_FOUND,
            format!("the key has no attribute {name} at that index"),
        )
    };
    match change {
        Change::Add => {
            let new = new.ok_or_else(|| missing("the attribute to add"))?;
            attributes.push(new.clone());
            Ok((attributes, Some(new)))
        }
        Change::Set => {
            let new = new.ok_or_else(|| missing("the attribute to set"))?;
            match position(&new.name, 0) {
                Some(at) => attributes[at] = new.clone(),
                None => attributes.push(new.clone()),
            }
            Ok((attributes, Some(new)))
        }
        Change::Modify => {
            let new = new.ok_or_else(|| missing("the new attribute"))?;
            let index = current.map_or(0, |c| c.index);
            let at = position(&new.name, index).ok_or_else(|| not_found(&new.name))?;
            attributes[at] = new.clone();
            Ok((attributes, Some(new)))
        }
        Change::Delete => {
            let current = current.ok_or_else(|| missing("the attribute to delete"))?;
            let at =
                position(&current.name, current.index).ok_or_else(|| not_found(&current.name))?;
            let removed = attributes.remove(at);
            Ok((attributes, Some(removed)))
        }
    }
}

/// The Locate filter; `None` when the request asks for something no key here can be (another
/// object type, another algorithm or length).
fn locate_filter(
    attributes: &[Attribute],
    version: ProtocolVersion,
) -> Result<Option<KmipFilter>, Failure> {
    let mut filter = KmipFilter::default();
    for attribute in attributes {
        match (attribute.name.as_str(), &attribute.value) {
            ("Object Type", Value::Enumeration(t))
                if ObjectType(*t) != ObjectType::SYMMETRIC_KEY =>
            {
                return Ok(None)
            }
            ("Cryptographic Algorithm", Value::Enumeration(a))
                if *a != kmip::enums::CryptographicAlgorithm::AES.0 =>
            {
                return Ok(None)
            }
            ("Cryptographic Length", Value::Integer(l)) if *l != 256 => return Ok(None),
            ("Object Type" | "Cryptographic Algorithm" | "Cryptographic Length", _) => {}
            ("State", Value::Enumeration(s)) => {
                filter.state = Some(match s {
                    1 => KmipState::PreActive,
                    2 => KmipState::Active,
                    3 => KmipState::Deactivated,
                    4 => KmipState::Compromised,
                    5 => KmipState::Destroyed,
                    6 => KmipState::DestroyedCompromised,
                    _ => return Err(Failure::new(ResultReason::INVALID_FIELD, "State is 1 to 6")),
                });
            }
            ("Name", _) => filter
                .names
                .push(attribute.field_text(tag::NAME_VALUE).unwrap_or_default().to_owned()),
            ("Application Specific Information", _) => filter.application_info.push((
                attribute.field_text(tag::APPLICATION_NAMESPACE).unwrap_or_default().to_owned(),
                attribute.field_text(tag::APPLICATION_DATA).unwrap_or_default().to_owned(),
            )),
            _ => filter.custom.push(to_kept(attribute, version)?),
        }
    }
    Ok(Some(filter))
}

fn located(keys: Vec<KeyId>, version: ProtocolVersion) -> Vec<Item> {
    let mut out = Vec::with_capacity(keys.len() + 1);
    if version >= ProtocolVersion::V1_3 {
        out.push(Item::integer(tag::LOCATED_ITEMS, i32::try_from(keys.len()).unwrap_or(i32::MAX)));
    }
    out.extend(keys.iter().map(uid_item));
    out
}

fn requested_names(payload: &Item, version: ProtocolVersion) -> Vec<String> {
    if version.is_2x() {
        payload
            .children_tagged(tag::ATTRIBUTE_REFERENCE)
            .filter_map(|r| enumeration_of(Some(r)))
            .filter_map(|t| attr::known_by_tag(kmip::Tag(t)).map(|k| k.name.to_owned()))
            .collect()
    } else {
        payload
            .children_tagged(tag::ATTRIBUTE_NAME)
            .filter_map(|n| match &n.value {
                Value::TextString(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A key the client may reach: in one of its key groups.
fn reachable(
    state: &State,
    agent: &str,
    key: &statemachine::key::Key,
    version: ProtocolVersion,
) -> Result<(), Failure> {
    let Some(client) = state.meta().agents.get(agent) else {
        return Err(refusal(&Reject::UnknownAgent { agent: agent.into() }, version));
    };
    match key.group {
        Some(group) if client.can_access(group) => Ok(()),
        _ => Err(refusal(&Reject::AgentCannotAccessKey { key_id: key.id }, version)),
    }
}

fn destroyed(key_id: &KeyId, version: ProtocolVersion) -> Failure {
    let reason =
        if version.is_2x() { ResultReason::OBJECT_DESTROYED } else { ResultReason::ITEM_NOT_FOUND };
    Failure::new(reason, format!("key {key_id} is destroyed: its value is gone"))
}

fn not_found(key_id: Option<KeyId>) -> Failure {
    let message = key_id.map_or_else(|| "no such key".to_owned(), |id| format!("no key {id}"));
    Failure::new(ResultReason::ITEM_NOT_FOUND, message)
}

fn locked() -> Failure {
    Failure::new(
        ResultReason::GENERAL_FAILURE,
        "this KMA is locked and hands out no key material; send it to another KMA, or unlock this one",
    )
}

fn check_object_type(payload: &Item) -> Result<(), Failure> {
    match enumeration_of(payload.child(tag::OBJECT_TYPE)).map(ObjectType) {
        Some(ObjectType::SYMMETRIC_KEY) => Ok(()),
        Some(_) => Err(Failure::new(
            ResultReason::INVALID_FIELD,
            "only Symmetric Keys (Object Type 2) are kept here",
        )),
        None => Err(missing("an Object Type")),
    }
}

/// The 32 bytes of a Register's Symmetric Key, in Raw or Transparent Symmetric Key format.
fn register_material(payload: &Item) -> Result<KeyMaterial, Failure> {
    let block = payload
        .child(tag::SYMMETRIC_KEY)
        .and_then(|key| key.child(tag::KEY_BLOCK))
        .ok_or_else(|| missing("a Symmetric Key with its Key Block"))?;
    let format = enumeration_of(block.child(tag::KEY_FORMAT_TYPE)).map(KeyFormatType);
    let material = block.child(tag::KEY_VALUE).and_then(|value| value.child(tag::KEY_MATERIAL));
    let bytes = match (format, material.map(|m| &m.value)) {
        (Some(KeyFormatType::RAW), Some(Value::ByteString(bytes))) => bytes,
        (Some(KeyFormatType::TRANSPARENT_SYMMETRIC_KEY), Some(Value::Structure(_))) => {
            match material.and_then(|m| m.child(tag::KEY_MATERIAL)).map(|k| &k.value) {
                Some(Value::ByteString(bytes)) => bytes,
                _ => return Err(missing("the key bytes")),
            }
        }
        _ => {
            return Err(Failure::new(
                ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                "register a Raw (or Transparent Symmetric Key) 256-bit key",
            ))
        }
    };
    let mut value: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        Failure::new(ResultReason::INVALID_FIELD, "a key here is 32 bytes (AES-256)")
    })?;
    let material = KeyMaterial::from_bytes(&value);
    zeroize::Zeroize::zeroize(&mut value);
    Ok(material)
}

fn symmetric_key(value: Vec<u8>) -> Item {
    let key_value = Item::structure(tag::KEY_VALUE, vec![Item::bytes(tag::KEY_MATERIAL, value)]);
    let block = Item::structure(
        tag::KEY_BLOCK,
        vec![
            Item::enumeration(tag::KEY_FORMAT_TYPE, KeyFormatType::RAW.0),
            key_value,
            Item::enumeration(
                tag::CRYPTOGRAPHIC_ALGORITHM,
                kmip::enums::CryptographicAlgorithm::AES.0,
            ),
            Item::integer(tag::CRYPTOGRAPHIC_LENGTH, 256),
        ],
    );
    Item::structure(tag::SYMMETRIC_KEY, vec![block])
}

/// Discover Versions: the client's versions this server speaks, in the client's order, or all
/// of them newest first when the client lists none.
fn discover_versions(payload: &Item) -> Vec<Item> {
    let asked: Vec<ProtocolVersion> = payload
        .children_tagged(tag::PROTOCOL_VERSION)
        .filter_map(ProtocolVersion::from_item)
        .collect();
    let versions: Vec<ProtocolVersion> = if asked.is_empty() {
        ProtocolVersion::SUPPORTED.to_vec()
    } else {
        asked.into_iter().filter(|v| v.is_supported()).collect()
    };
    versions.into_iter().map(ProtocolVersion::to_item).collect()
}

/// Query: the operations and object types offered, who this server is, and the application
/// namespaces it indexes.
fn query(payload: &Item) -> Vec<Item> {
    let functions: Vec<QueryFunction> = payload
        .children_tagged(tag::QUERY_FUNCTION)
        .filter_map(|f| enumeration_of(Some(f)))
        .map(QueryFunction)
        .collect();
    let mut out = Vec::new();
    if functions.contains(&QueryFunction::QUERY_OPERATIONS) {
        out.extend(OPERATIONS.iter().map(|op| Item::enumeration(tag::OPERATION, op.0)));
    }
    if functions.contains(&QueryFunction::QUERY_OBJECTS) {
        out.push(Item::enumeration(tag::OBJECT_TYPE, ObjectType::SYMMETRIC_KEY.0));
    }
    if functions.contains(&QueryFunction::QUERY_SERVER_INFORMATION) {
        out.push(Item::text(
            tag::VENDOR_IDENTIFICATION,
            concat!("kms2 KMA ", env!("CARGO_PKG_VERSION")),
        ));
    }
    if functions.contains(&QueryFunction::QUERY_APPLICATION_NAMESPACES) {
        out.push(Item::text(tag::APPLICATION_NAMESPACE, "LIBRARY-LTO"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use statemachine::kmip::KmipValue;

    fn text(name: &str, value: &str) -> KmipAttribute {
        KmipAttribute::new(name, KmipValue::Text(value.into()))
    }

    fn instance(name: &str, index: u32) -> Attribute {
        Attribute { name: name.into(), index, value: Value::Structure(Vec::new()) }
    }

    /// Add appends; Set replaces the first instance or adds; Modify and Delete act on the
    /// instance at the index given and refuse one that does not exist. (issue 19)
    #[test]
    fn u5_attribute_changes_act_on_the_instance_they_name() {
        let kept = vec![text("x-a", "1"), text("x-b", "2"), text("x-a", "3")];
        let change = |change, new: Option<KmipAttribute>, current: Option<Attribute>| {
            changed(&kept, change, new, current.as_ref()).map(|(all, _)| all)
        };
        let added = change(Change::Add, Some(text("x-a", "4")), None).expect("add");
        assert_eq!(added.len(), 4);
        let set = change(Change::Set, Some(text("x-a", "9")), None).expect("set");
        assert_eq!(set, [text("x-a", "9"), text("x-b", "2"), text("x-a", "3")]);
        let set_new = change(Change::Set, Some(text("x-c", "5")), None).expect("set new");
        assert_eq!(set_new.last(), Some(&text("x-c", "5")));
        let modified = change(Change::Modify, Some(text("x-a", "7")), Some(instance("x-a", 1)))
            .expect("modify");
        assert_eq!(modified, [text("x-a", "1"), text("x-b", "2"), text("x-a", "7")]);
        let deleted = change(Change::Delete, None, Some(instance("x-a", 0))).expect("delete");
        assert_eq!(deleted, [text("x-b", "2"), text("x-a", "3")]);
        let missing = change(Change::Delete, None, Some(instance("x-a", 2))).expect_err("none");
        assert_eq!(missing.reason, ResultReason::ITEM_NOT_FOUND);
    }
}
